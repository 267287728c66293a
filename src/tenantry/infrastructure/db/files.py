"""File rows: what is known about each stored object, scoped to one tenant."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import func, select

from tenantry.domain.files import StoredFile
from tenantry.domain.projects import ListQuery
from tenantry.infrastructure.db.listing import list_filters
from tenantry.infrastructure.db.models import FileModel
from tenantry.infrastructure.db.tenancy import TenantScopedRepository, lock_tenant_row


class FileModelRepository(TenantScopedRepository[FileModel]):
    model_type = FileModel


class LiveFileModelRepository(FileModelRepository):
    live_only = True


def to_file(row: FileModel) -> StoredFile:
    return StoredFile(
        id=row.id,
        tenant_id=row.tenant_id,
        original_filename=row.original_filename,
        size=row.size,
        content_type=row.content_type,
        claimed_content_type=row.claimed_content_type,
        sha256=row.sha256,
        metadata=dict(row.meta),
        storage_key=row.storage_key,
        created_by=row.created_by,
        created_at=row.created_at,
        deleted_at=row.deleted_at,
    )


class SqlFileRepository:
    def __init__(self, live: LiveFileModelRepository, every: FileModelRepository) -> None:
        self.live = live
        self.every = every

    def _rows(self, include_deleted: bool) -> FileModelRepository:
        return self.every if include_deleted else self.live

    async def add(self, file: StoredFile) -> StoredFile:
        row = await self.live.add(
            FileModel(
                id=file.id,
                original_filename=file.original_filename,
                size=file.size,
                content_type=file.content_type,
                claimed_content_type=file.claimed_content_type,
                sha256=file.sha256,
                meta=file.metadata,
                storage_key=file.storage_key,
                created_by=file.created_by,
            )
        )
        return to_file(row)

    async def get(self, file_id: UUID, *, include_deleted: bool = False) -> StoredFile | None:
        row = await self._rows(include_deleted).get_one_or_none(id=file_id)
        return None if row is None else to_file(row)

    async def list(
        self, query: ListQuery, *, include_deleted: bool = False
    ) -> tuple[list[StoredFile], int]:
        rows, total = await self._rows(include_deleted).get_many_and_count(
            *list_filters(query, search_field="original_filename")
        )
        return [to_file(row) for row in rows], total

    async def soft_delete(self, file_id: UUID, at: datetime) -> bool:
        result = await self.live.session.execute(
            self.live.update_rows()
            .where(FileModel.id == file_id)
            .values(deleted_at=at)
            .returning(FileModel.id)
        )
        return result.first() is not None

    async def usage(self) -> tuple[int, int]:
        statement = self.live.scoped(
            select(func.coalesce(func.sum(FileModel.size), 0), func.count(FileModel.id))
        )
        used, count = (await self.live.session.execute(statement)).one()
        return int(used), int(count)

    async def deleted_before(self, cutoff: datetime, *, limit: int) -> Sequence[StoredFile]:
        rows = await self.every.session.scalars(
            self.every.scoped(select(FileModel))
            .where(FileModel.deleted_at.is_not(None), FileModel.deleted_at < cutoff)
            .limit(limit)
        )
        return [to_file(row) for row in rows]

    async def set_metadata(self, file_id: UUID, metadata: dict[str, Any]) -> None:
        await self.live.session.execute(
            self.every.update_rows().where(FileModel.id == file_id).values(meta=metadata)
        )

    async def purge(self, file_id: UUID) -> None:
        await self.every.delete_where(FileModel.id == file_id)

    async def lock_usage(self) -> None:
        # A tenant's uploads check and take its quota one at a time.
        await lock_tenant_row(self.live.session, self.live.tenant_id)

"""File rows: what is known about each stored object, scoped to one tenant."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Index, String, func, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.domain.files import FileRepository, StoredFile
from tenantry.infrastructure.db.base import TenantOwned, creator_key
from tenantry.infrastructure.db.repository import SqlRepository
from tenantry.infrastructure.db.tenancy import session_transaction
from tenantry.infrastructure.db.tenants import lock_tenant_row


class FileModel(TenantOwned):
    __tablename__ = "files"
    __table_args__ = (creator_key(), Index("ix_files_tenant_created", "tenant_id", "created_at"))

    created_by: Mapped[UUID | None]
    original_filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(100))
    claimed_content_type: Mapped[str | None] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    meta: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, default=dict, server_default=text("'{}'::jsonb")
    )
    storage_key: Mapped[str] = mapped_column(String(300))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class SqlFileRepository(SqlRepository[StoredFile]):
    model = FileModel
    entity = StoredFile
    port = FileRepository

    async def usage(self) -> tuple[int, int]:
        table = self.table()
        statement = self.statement(
            "usage",
            lambda: (
                select(func.coalesce(func.sum(table.c.size), 0), func.count())
                .select_from(table)
                .where(*self.compiled_filters())
            ),
        )
        row = await statement.fetch_row(self.session, **self.arguments())
        assert row is not None, "an aggregate returns one row"
        used, count = row
        return int(used), int(count)

    async def deleted_before(self, cutoff: datetime, *, limit: int) -> Sequence[StoredFile]:
        table = self.table()
        statement = (
            self.select(include_deleted=True)
            .where(table.c.deleted_at.is_not(None), table.c.deleted_at < cutoff)
            .limit(limit)
        )
        connection = (await session_transaction(self.session)).connection
        return [self.to_entity(row) for row in (await connection.execute(statement)).mappings()]

    async def lock_usage(self) -> None:
        # A tenant's uploads check and take its quota one at a time.
        await lock_tenant_row(self.session, self.tenant_id)

"""File rows: what is known about each stored object, scoped to one tenant."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, CheckConstraint, Index, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.domain.files import FileRepository, StoredFile
from tenantry.infrastructure.db.base import TenantOwned, creator_key
from tenantry.infrastructure.db.repository import SqlRepository
from tenantry.infrastructure.db.tenancy import session_transaction


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


class FileUsageModel(TenantOwned):
    """One row per tenant, its ``id`` the tenant's: the bytes and count of its live files, and
    the bytes that uploads in progress hold (migration 0010_file_usage)."""

    __tablename__ = "file_usage"
    __table_args__ = (
        CheckConstraint(
            "used_bytes >= 0 AND file_count >= 0 AND reserved_bytes >= 0", name="not_negative"
        ),
    )

    used_bytes: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    file_count: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    reserved_bytes: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class FileReservationModel(TenantOwned):
    """The bytes one upload in progress holds, its ``id`` the file's; gone when the upload ends.
    A row past ``expires_at`` belongs to an upload that died: its bytes are given back."""

    __tablename__ = "file_reservations"
    __table_args__ = (
        CheckConstraint("bytes >= 0", name="not_negative"),
        Index("ix_file_reservations_tenant_expires", "tenant_id", "expires_at"),
    )

    bytes: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))


# The usage row is the tenant's one point of serialisation, and each statement below changes it
# in one conditional UPDATE: the row lock lasts that statement and its commit, never a transfer.
# $1 is the tenant everywhere; the tenant policy holds every table here too.

# Hold $3 more bytes for upload $2, if the live files, every hold and these fit in quota $4.
# An UPDATE re-reads its WHERE on the latest version of a row another transaction changed
# (READ COMMITTED), so two uploads racing for the last bytes cannot both pass.
_RESERVE = """
WITH held AS (
    UPDATE file_usage SET reserved_bytes = reserved_bytes + $3, updated_at = now()
    WHERE tenant_id = $1 AND id = $1 AND used_bytes + reserved_bytes + $3 <= $4
    RETURNING tenant_id
)
INSERT INTO file_reservations AS r (tenant_id, id, bytes, expires_at, created_at, updated_at)
SELECT tenant_id, $2::uuid, $3::bigint, $5::timestamptz, now(), now() FROM held
ON CONFLICT (tenant_id, id) DO UPDATE
    SET bytes = r.bytes + excluded.bytes, expires_at = excluded.expires_at, updated_at = now()
RETURNING r.bytes
"""

# A tenant's first upload: its row, empty (a tenant with files got one from the backfill).
_START_USAGE = """
INSERT INTO file_usage (tenant_id, id, used_bytes, file_count, reserved_bytes,
                        created_at, updated_at)
VALUES ($1, $1, 0, 0, 0, now(), now())
ON CONFLICT (tenant_id, id) DO NOTHING
"""

# Upload $2 ends: its hold goes, its size counts, its row is written, all or nothing. Past its
# hold (the hold expired and was given back) the size must still fit beside the rest; within
# it, it fits already, even should the quota have been lowered since.
_FINISH = """
WITH released AS (
    DELETE FROM file_reservations WHERE tenant_id = $1 AND id = $2 RETURNING bytes
), held AS (
    SELECT coalesce((SELECT bytes FROM released), 0) AS bytes
), charged AS (
    UPDATE file_usage SET
        used_bytes = used_bytes + $3,
        file_count = file_count + 1,
        reserved_bytes = reserved_bytes - held.bytes,
        updated_at = now()
    FROM held
    WHERE tenant_id = $1 AND id = $1
      AND ($3 <= held.bytes OR used_bytes + reserved_bytes - held.bytes + $3 <= $4)
    RETURNING file_usage.tenant_id
)
INSERT INTO files (tenant_id, id, size, original_filename, content_type, claimed_content_type,
                   sha256, metadata, storage_key, created_by, created_at, updated_at)
SELECT tenant_id, $2::uuid, $3::bigint, $5::text, $6::text, $7::text, $8::text, $9::jsonb, $10::text,
       $11::uuid, $12::timestamptz, $12::timestamptz
FROM charged
RETURNING *
"""

_RELEASE = """
WITH released AS (
    DELETE FROM file_reservations WHERE tenant_id = $1 AND id = $2 RETURNING bytes
)
UPDATE file_usage SET reserved_bytes = reserved_bytes - released.bytes, updated_at = now()
FROM released WHERE tenant_id = $1 AND id = $1
"""

# The holds of uploads whose process died; an upload still alive re-creates its row when it
# holds more, and its finish checks the quota afresh (see _FINISH).
_RELEASE_EXPIRED = """
WITH released AS (
    DELETE FROM file_reservations WHERE tenant_id = $1 AND expires_at < $2 RETURNING bytes
), total AS (
    SELECT coalesce(sum(bytes), 0) AS bytes FROM released
), given_back AS (
    UPDATE file_usage SET reserved_bytes = reserved_bytes - total.bytes, updated_at = now()
    FROM total WHERE tenant_id = $1 AND id = $1 AND total.bytes > 0
)
SELECT bytes FROM total
"""

# A live file goes (soft deleted, or deleted outright): its bytes leave the counters with it.
_SOFT_DELETE = """
WITH gone AS (
    UPDATE files SET deleted_at = $3, updated_at = now()
    WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL
    RETURNING size
), counted AS (
    UPDATE file_usage SET used_bytes = used_bytes - gone.size, file_count = file_count - 1,
        updated_at = now()
    FROM gone WHERE tenant_id = $1 AND id = $1
)
SELECT count(*) FROM gone
"""
_DELETE = """
WITH gone AS (
    DELETE FROM files WHERE tenant_id = $1 AND id = $2 RETURNING size, deleted_at
), counted AS (
    UPDATE file_usage SET used_bytes = used_bytes - gone.size, file_count = file_count - 1,
        updated_at = now()
    FROM gone WHERE tenant_id = $1 AND id = $1 AND gone.deleted_at IS NULL
)
SELECT count(*) FROM gone
"""
_QUOTA_SETTING = """
SELECT settings -> 'quota_bytes' FROM tenants WHERE id = $1
"""
_USAGE = """
SELECT used_bytes, file_count FROM file_usage WHERE tenant_id = $1 AND id = $1
"""


class SqlFileRepository(SqlRepository[StoredFile]):
    model = FileModel
    entity = StoredFile
    port = FileRepository

    async def _fetch_row(self, sql: str, *arguments: Any) -> Any:
        transaction = await session_transaction(self.session)
        return await transaction.run(transaction.driver.fetchrow(sql, *arguments))

    async def _fetch_value(self, sql: str, *arguments: Any) -> Any:
        transaction = await session_transaction(self.session)
        return await transaction.run(transaction.driver.fetchval(sql, *arguments))

    async def usage(self) -> tuple[int, int]:
        row = await self._fetch_row(_USAGE, self.tenant_id)
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    async def quota_setting(self) -> Any:
        return await self._fetch_value(_QUOTA_SETTING, self.tenant_id)

    async def reserve(self, file_id: UUID, size: int, *, quota: int, expires_at: datetime) -> bool:
        arguments = (self.tenant_id, file_id, size, quota, expires_at)
        if await self._fetch_row(_RESERVE, *arguments) is not None:
            return True
        # Refused, or the tenant has no usage row yet (its first upload, maybe concurrent ones).
        await self._fetch_row(_START_USAGE, self.tenant_id)
        return await self._fetch_row(_RESERVE, *arguments) is not None

    async def add_reserved(self, *, quota: int, **values: Any) -> StoredFile | None:
        arguments = (
            self.tenant_id,
            values["id"],
            values["size"],
            quota,
            values["original_filename"],
            values["content_type"],
            values.get("claimed_content_type"),
            values["sha256"],
            msgspec.json.encode(values.get("metadata") or {}).decode(),
            values["storage_key"],
            values.get("created_by"),
            values["created_at"],
        )
        row = await self._fetch_row(_FINISH, *arguments)
        if row is None:
            # Refused, or a tenant's first upload held nothing ahead and found no usage row.
            await self._fetch_row(_START_USAGE, self.tenant_id)
            row = await self._fetch_row(_FINISH, *arguments)
        return None if row is None else self.to_entity(row)

    async def release(self, file_id: UUID) -> None:
        await self._fetch_row(_RELEASE, self.tenant_id, file_id)

    async def release_expired(self, now: datetime) -> int:
        return int(await self._fetch_value(_RELEASE_EXPIRED, self.tenant_id, now))

    async def soft_delete(self, id: UUID, /, at: datetime, **where: Any) -> bool:
        if where:
            raise TypeError("files are soft deleted by id alone")
        return bool(await self._fetch_value(_SOFT_DELETE, self.tenant_id, id, at))

    async def delete(self, id: UUID, /, **where: Any) -> bool:
        if where:
            raise TypeError("files are deleted by id alone")
        return bool(await self._fetch_value(_DELETE, self.tenant_id, id))

    async def deleted_before(self, cutoff: datetime, *, limit: int) -> Sequence[StoredFile]:
        table = self.table()
        statement = (
            self.select(include_deleted=True)
            .where(table.c.deleted_at.is_not(None), table.c.deleted_at < cutoff)
            .limit(limit)
        )
        connection = (await session_transaction(self.session)).connection
        return [self.to_entity(row) for row in (await connection.execute(statement)).mappings()]

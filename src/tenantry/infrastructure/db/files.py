"""File rows: what is known about each stored object, scoped to one tenant."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ClauseElement,
    ColumnElement,
    Index,
    Numeric,
    String,
    Table,
    bindparam,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.domain.errors import INVALID_CREDENTIALS, Unauthenticated
from tenantry.domain.files import FileRepository, QuotaRefused, StoredFile
from tenantry.infrastructure.db.base import TenantOwned, creator_key, metadata
from tenantry.infrastructure.db.repository import SqlRepository
from tenantry.infrastructure.db.tenancy import (
    TENANT_KEY,
    check_again,
    of_tenant,
    run_at_commit,
    session_transaction,
)


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
# Each is compiled once (SqlFileRepository.statement) with the tenant as a parameter; the
# tenant policy holds every table here too.
_FILES: Table = FileModel.__table__  # type: ignore[assignment]
_USAGE: Table = FileUsageModel.__table__  # type: ignore[assignment]
_HOLDS: Table = FileReservationModel.__table__  # type: ignore[assignment]

_FILE_ID = bindparam("file_id", type_=_HOLDS.c.id.type)
_SIZE = bindparam("size", type_=BigInteger())
_DEFAULT_QUOTA = bindparam("default_quota", type_=BigInteger())


def _quota() -> ColumnElement[Any]:
    """The tenant's quota, read by the statement that checks it (no round trip of its own): its
    own ``quota_bytes`` setting when that is a whole number of bytes, as the application reads
    it (``Files.quota``), else ``default_quota``, the policy's."""
    tenants = metadata.tables["tenants"]
    setting = tenants.c.settings["quota_bytes"]
    own = (
        select(setting.astext.cast(Numeric))
        .where(
            tenants.c.id == bindparam(TENANT_KEY, type_=tenants.c.id.type),
            func.jsonb_typeof(setting) == "number",
            setting.astext.regexp_match("^[0-9]+$"),
        )
        .scalar_subquery()
    )
    return func.coalesce(own, _DEFAULT_QUOTA)


def _usage_row() -> tuple[ColumnElement[bool], ...]:
    """The tenant's usage row: its id is the tenant's."""
    return of_tenant(_USAGE), _USAGE.c.id == bindparam(TENANT_KEY)


def _usage() -> ClauseElement:
    return select(_USAGE.c.used_bytes, _USAGE.c.file_count).where(*_usage_row())


def _start_usage() -> ClauseElement:
    """A tenant's first upload: its row, empty (a tenant with files got one from the backfill)."""
    tenant = bindparam(TENANT_KEY, type_=_USAGE.c.tenant_id.type)
    return (
        insert(_USAGE)
        .values(
            tenant_id=tenant,
            id=tenant,
            used_bytes=0,
            file_count=0,
            reserved_bytes=0,
            created_at=func.now(),
            updated_at=func.now(),
        )
        .on_conflict_do_nothing(index_elements=[_USAGE.c.tenant_id, _USAGE.c.id])
    )


def _reserve() -> ClauseElement:
    """Hold ``size`` more bytes for upload ``file_id``, if the live files, every hold and these
    fit in the tenant's quota. An UPDATE re-reads its WHERE on the latest version of a row another
    transaction changed (READ COMMITTED), so two uploads racing for the last bytes cannot both
    pass."""
    held = (
        update(_USAGE)
        .where(*_usage_row(), _USAGE.c.used_bytes + _USAGE.c.reserved_bytes + _SIZE <= _quota())
        .values(reserved_bytes=_USAGE.c.reserved_bytes + _SIZE, updated_at=func.now())
        .returning(_USAGE.c.tenant_id)
        .cte("held")
    )
    expires_at = bindparam("expires_at", type_=_HOLDS.c.expires_at.type)
    statement = insert(_HOLDS).from_select(
        ["tenant_id", "id", "bytes", "expires_at", "created_at", "updated_at"],
        select(held.c.tenant_id, _FILE_ID, _SIZE, expires_at, func.now(), func.now()),
    )
    return statement.on_conflict_do_update(
        index_elements=[_HOLDS.c.tenant_id, _HOLDS.c.id],
        set_={
            "bytes": _HOLDS.c.bytes + statement.excluded.bytes,
            "expires_at": statement.excluded.expires_at,
            # The new row's now(): Citus takes no function in DO UPDATE SET.
            "updated_at": statement.excluded.updated_at,
        },
    ).returning(_HOLDS.c.bytes)


def _released() -> Any:
    """The hold of upload ``file_id``, deleted, its bytes returned."""
    return (
        delete(_HOLDS)
        .where(of_tenant(_HOLDS), _HOLDS.c.id == _FILE_ID)
        .returning(_HOLDS.c.bytes)
        .cte("released")
    )


# An upload's row and its usage, written at commit (migrations 0025_add_file,
# 0029_add_file_tenant_active, 0031_add_file_creator_first): the function raises QUOTA_REFUSED
# when the size is past the upload's hold and the quota has no room, and TENANT_NOT_ACTIVE when
# the tenant was suspended or erased while the bytes streamed (the request's credentials were
# confirmed before them).
_ADD_FILE = (
    "SELECT tenantry_add_file({tenant_id}, {default_quota}, {id}, {size}, "
    "{original_filename}, {content_type}, {claimed_content_type}, {sha256}, "
    "{metadata}::jsonb, {storage_key}, {created_by}, {created_at})"
)
QUOTA_REFUSED = "TR002"
TENANT_NOT_ACTIVE = "TR004"


def _release() -> ClauseElement:
    released = _released()
    return (
        update(_USAGE)
        .where(*_usage_row())
        .values(reserved_bytes=_USAGE.c.reserved_bytes - released.c.bytes, updated_at=func.now())
    )


def _release_expired() -> ClauseElement:
    """The holds of uploads whose process died, given back; an upload still alive re-creates
    its hold when it holds more, and the row's write checks the quota afresh (_ADD_FILE)."""
    released = (
        delete(_HOLDS)
        .where(
            of_tenant(_HOLDS),
            _HOLDS.c.expires_at < bindparam("now", type_=_HOLDS.c.expires_at.type),
        )
        .returning(_HOLDS.c.bytes)
        .cte("released")
    )
    total = select(func.coalesce(func.sum(released.c.bytes), 0).label("bytes")).cte("total")
    given_back = (
        update(_USAGE)
        .where(*_usage_row(), total.c.bytes > 0)
        .values(reserved_bytes=_USAGE.c.reserved_bytes - total.c.bytes, updated_at=func.now())
        .returning(_USAGE.c.tenant_id)
        .cte("given_back")
    )
    return select(total.c.bytes).add_cte(given_back)


def _uncounted(gone: Any, *where: ColumnElement[bool]) -> ClauseElement:
    """A file deleted outright: its bytes leave the counters with it; how many files went."""
    return select(func.count()).select_from(gone).add_cte(_counted(gone, *where))


def _counted(gone: Any, *where: ColumnElement[bool]) -> Any:
    """The counters without the bytes of the file ``gone`` (soft deleted, or deleted outright)."""
    return (
        update(_USAGE)
        .where(*_usage_row(), *where)
        .values(
            used_bytes=_USAGE.c.used_bytes - gone.c.size,
            file_count=_USAGE.c.file_count - 1,
            updated_at=func.now(),
        )
        .returning(_USAGE.c.tenant_id)
        .cte("counted")
    )


def _quota_setting() -> ClauseElement:
    """The tenant's own quota setting (a platform table: the tenant row by its id)."""
    tenants = metadata.tables["tenants"]
    return select(tenants.c.settings["quota_bytes"]).where(
        tenants.c.id == bindparam(TENANT_KEY, type_=tenants.c.id.type)
    )


class SqlFileRepository(SqlRepository[StoredFile]):
    model = FileModel
    entity = StoredFile
    port = FileRepository

    async def usage(self) -> tuple[int, int]:
        row = await self.statement("usage", _usage).fetch_row(self.session, **self.arguments())
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    async def quota_setting(self) -> Any:
        return await self.statement("quota_setting", _quota_setting).fetch_value(
            self.session, **self.arguments()
        )

    async def reserve(
        self, file_id: UUID, size: int, *, default_quota: int, expires_at: datetime
    ) -> bool:
        arguments = self.arguments(
            file_id=file_id, size=size, default_quota=default_quota, expires_at=expires_at
        )
        reserve = self.statement("reserve", _reserve)
        if await reserve.fetch_row(self.session, **arguments) is not None:
            return True
        # Refused, or the tenant has no usage row yet (its first upload, maybe concurrent ones).
        await self._start_usage()
        return await reserve.fetch_row(self.session, **arguments) is not None

    async def add_reserved(self, *, default_quota: int, **values: Any) -> StoredFile:
        # As the table's defaults have it, where a value is not given.
        row = {"claimed_content_type": None, "created_by": None, "metadata": {}} | values
        stored = StoredFile(tenant_id=self.tenant_id, **row)
        # An upload's credentials were confirmed before its bytes (a token's by its first
        # transaction, a key's by its own read): its row's transaction confirms them again, in
        # the same round trip, so a session ended, a key revoked or a user deactivated
        # meanwhile stores nothing (401).
        check_again(self.session)
        # Written by the commit, with what else it writes: the row is what was given.
        run_at_commit(
            self.session,
            self.tenant_id,
            _ADD_FILE,
            refused={QUOTA_REFUSED: QuotaRefused, TENANT_NOT_ACTIVE: _tenant_not_active},
            default_quota=default_quota,
            **msgspec.structs.asdict(stored),
        )
        return stored

    async def _start_usage(self) -> None:
        await self.statement("start_usage", _start_usage).fetch_row(
            self.session, **self.arguments()
        )

    async def release(self, file_id: UUID) -> None:
        await self.statement("release", _release).fetch_row(
            self.session, **self.arguments(file_id=file_id)
        )

    async def release_expired(self, now: datetime) -> int:
        released = self.statement("release_expired", _release_expired)
        return int(await released.fetch_value(self.session, **self.arguments(now=now)))

    async def soft_delete(self, id: UUID, /, at: datetime, **where: Any) -> StoredFile | None:
        if where:
            raise TypeError("files are soft deleted by id alone")

        def build() -> ClauseElement:
            gone = (
                update(_FILES)
                .where(*self.compiled_filters(), _FILES.c.id == _FILE_ID)
                .values(
                    deleted_at=bindparam("at", type_=_FILES.c.deleted_at.type), **self.touched()
                )
                .returning(*_FILES.c)
                .cte("gone")
            )
            return select(*gone.c).add_cte(_counted(gone))

        deleted = self.statement("soft_delete_counted", build)
        record = await deleted.fetch_row(self.session, **self.arguments(file_id=id, at=at))
        return None if record is None else self.to_entity(record)

    async def delete(self, id: UUID, /, **where: Any) -> bool:
        if where:
            raise TypeError("files are deleted by id alone")

        def build() -> ClauseElement:
            gone = (
                delete(_FILES)
                .where(*self.compiled_filters(include_deleted=True), _FILES.c.id == _FILE_ID)
                .returning(_FILES.c.size, _FILES.c.deleted_at)
                .cte("gone")
            )
            # A soft-deleted file's bytes left the counters already.
            return _uncounted(gone, gone.c.deleted_at.is_(None))

        deleted = self.statement("delete_counted", build)
        return bool(await deleted.fetch_value(self.session, **self.arguments(file_id=id)))

    async def deleted_before(self, cutoff: datetime, *, limit: int) -> Sequence[StoredFile]:
        table = self.table()
        statement = (
            self.select(include_deleted=True)
            .where(table.c.deleted_at.is_not(None), table.c.deleted_at < cutoff)
            .limit(limit)
        )
        connection = (await session_transaction(self.session)).connection
        return [self.to_entity(row) for row in (await connection.execute(statement)).mappings()]


def _tenant_not_active() -> Unauthenticated:
    # What the tenant's next request is answered: its credentials stopped with the suspension.
    return Unauthenticated(INVALID_CREDENTIALS)

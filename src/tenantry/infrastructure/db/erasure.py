"""Tenant erasure persistence: the platform's erasure log (``tenant_erasures``, no tenant's
table: it outlives the tenant it names) and the removal of a tenant's rows from every tenant
table the catalog lists (migration 0013_tenant_erasure)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.base import UUIDv7AuditBase
from sqlalchemy import (
    BigInteger,
    Index,
    String,
    Table,
    cast,
    func,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, REGCLASS
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.domain.erasure import (
    ErasureLog,
    ErasureProgress,
    ErasureState,
    Requester,
    TenantData,
    TenantErasure,
    TenantTable,
)
from tenantry.domain.errors import Conflict
from tenantry.domain.tenants import Tenant
from tenantry.infrastructure.db import catalog
from tenantry.infrastructure.db.repository import PlatformRows, TenantRows
from tenantry.infrastructure.db.tenants import TenantModel

UNFINISHED = f"state <> '{ErasureState.FINISHED.value}'"


class ErasureModel(UUIDv7AuditBase):
    __tablename__ = "tenant_erasures"
    # One erasure under way per tenant, also for two requests at once; the sweep reads the
    # unfinished ones only.
    __table_args__ = (
        Index(
            "ux_tenant_erasures_unfinished",
            "erased_tenant_id",
            unique=True,
            postgresql_where=text(UNFINISHED),
        ),
    )

    # Not named tenant_id: the catalog takes every table with a tenant_id for a tenant's
    # table, and this one must outlive the tenant. No foreign key either, for the same reason.
    erased_tenant_id: Mapped[UUID]
    slug: Mapped[str] = mapped_column(String(63))
    requested_by: Mapped[UUID | None]
    requested_by_type: Mapped[str] = mapped_column(String(20))
    request_id: Mapped[str | None] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    rows_removed: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    objects_removed: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    # Rows removed by table name.
    removed: Mapped[dict[str, int]] = mapped_column(
        JSONB, default=dict, server_default=text("'{}'::jsonb")
    )


_LOG: Table = ErasureModel.__table__  # type: ignore[assignment]
_TENANTS: Table = TenantModel.__table__  # type: ignore[assignment]


def to_erasure(row: Any) -> TenantErasure:
    return TenantErasure(
        id=row.id,
        tenant_id=row.erased_tenant_id,
        slug=row.slug,
        requested_by=row.requested_by,
        requested_by_type=Requester(row.requested_by_type),
        request_id=row.request_id,
        state=ErasureState(row.state),
        requested_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        heartbeat_at=row.heartbeat_at,
        progress=ErasureProgress(
            rows=row.rows_removed, objects=row.objects_removed, tables=dict(row.removed)
        ),
    )


class SqlErasureLog(PlatformRows):
    port = ErasureLog

    async def add(
        self,
        tenant: Tenant,
        *,
        requested_by: UUID | None,
        requested_by_type: Requester,
        request_id: str | None,
    ) -> TenantErasure:
        row = ErasureModel(
            erased_tenant_id=tenant.id,
            slug=tenant.slug,
            requested_by=requested_by,
            requested_by_type=requested_by_type.value,
            request_id=request_id,
            state=ErasureState.PENDING.value,
            removed={},
        )
        self.session.add(row)
        try:
            await self.session.flush()
        except IntegrityError:
            raise Conflict("An erasure of this tenant is already under way.") from None
        return to_erasure(row)

    async def get(self, erasure_id: UUID) -> TenantErasure | None:
        return await self._one(select(_LOG).where(_LOG.c.id == erasure_id))

    async def unfinished(self, tenant_id: UUID) -> TenantErasure | None:
        # The platform's log names the tenant it erases; it is no tenant's row to scope.
        return await self._one(
            select(_LOG).where(_LOG.c.erased_tenant_id == tenant_id, text(UNFINISHED))
        )

    async def page(self, *, limit: int, offset: int) -> tuple[list[TenantErasure], int]:
        rows = await self.session.execute(
            select(_LOG).order_by(_LOG.c.id.desc()).limit(limit).offset(offset)
        )
        total = await self.session.scalar(select(func.count()).select_from(_LOG))
        return [to_erasure(row) for row in rows], int(total or 0)

    async def stalled(self, quiet_since: datetime) -> list[TenantErasure]:
        rows = await self.session.execute(
            select(_LOG)
            .where(
                text(UNFINISHED),
                func.coalesce(_LOG.c.heartbeat_at, _LOG.c.created_at) < quiet_since,
            )
            .order_by(_LOG.c.id)
        )
        return [to_erasure(row) for row in rows]

    async def start(self, erasure_id: UUID, at: datetime) -> TenantErasure | None:
        return await self._one(
            update(_LOG)
            .where(_LOG.c.id == erasure_id, text(UNFINISHED))
            .values(
                state=ErasureState.RUNNING.value,
                started_at=func.coalesce(_LOG.c.started_at, at),
                heartbeat_at=at,
                updated_at=func.now(),
            )
            .returning(_LOG)
        )

    async def count(
        self, erasure_id: UUID, at: datetime, *, table: str | None = None, removed: int = 0
    ) -> None:
        values: dict[str, Any] = {"heartbeat_at": at, "updated_at": func.now()}
        if table is None:
            values["objects_removed"] = _LOG.c.objects_removed + removed
        elif removed:
            values["rows_removed"] = _LOG.c.rows_removed + removed
            # Added in the statement, not read and written back: two workers on one erasure
            # (a sweep that found it quiet while a slow batch ran) both count right.
            values["removed"] = _LOG.c.removed.op("||")(
                func.jsonb_build_object(
                    table,
                    func.coalesce(_LOG.c.removed[table].as_integer(), 0) + removed,
                )
            )
        await self.session.execute(update(_LOG).where(_LOG.c.id == erasure_id).values(values))

    async def finish(self, erasure_id: UUID, at: datetime) -> TenantErasure | None:
        return await self._one(
            update(_LOG)
            .where(_LOG.c.id == erasure_id, text(UNFINISHED))
            .values(
                state=ErasureState.FINISHED.value,
                finished_at=at,
                heartbeat_at=at,
                updated_at=func.now(),
            )
            .returning(_LOG)
        )

    async def _one(self, statement: Any) -> TenantErasure | None:
        row = (await self.session.execute(statement)).first()
        return None if row is None else to_erasure(row)


# The tenant tables the app role may not delete from: their rows go through the function.
_APPEND_ONLY = text(
    "select t.name from unnest(cast(:names as text[])) as t(name) "
    "where not has_table_privilege(current_user, format('%I', t.name), 'DELETE')"
)


class SqlTenantData(TenantRows[Any]):
    """One tenant's rows in every tenant table. The session runs under that tenant's row level
    security, so a statement here reaches no other tenant's row even were its filter wrong."""

    port = TenantData

    async def tables(self) -> list[TenantTable]:
        names = [table.name for table in await catalog.tenant_tables(self.session)]
        append_only = set((await self.session.scalars(_APPEND_ONLY, {"names": names})).all())
        return [TenantTable(name=name, append_only=name in append_only) for name in reversed(names)]

    async def delete_batch(self, table: TenantTable, limit: int) -> int:
        name = _quoted(table.name)
        if table.append_only:
            erase = func.erase_tenant_rows(cast(literal(name), REGCLASS), self.tenant_id, limit)
            return int(await self.session.scalar(select(erase)) or 0)
        # By ctid: any table, whatever its key; ANY(ARRAY(...)) is a TID scan, where IN
        # (subquery) may read the whole table at each batch.
        result = await self.session.execute(
            text(
                f"delete from {name} where tenant_id = :tenant and ctid = any(array("  # noqa: S608 - a catalog name, quoted
                f"select ctid from {name} where tenant_id = :tenant limit :limit))"
            ),
            {"tenant": self.tenant_id, "limit": limit},
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def remove_tenant(self) -> bool:
        # What a writer added since the tables were emptied goes with it (every tenant table
        # cascades from its tenant). The app role may not delete a tenant itself: the function
        # does, for a tenant under erasure only (migration 0015_tenant_removal).
        removed = await self.session.scalar(select(func.remove_erased_tenant(self.tenant_id)))
        return bool(removed)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'

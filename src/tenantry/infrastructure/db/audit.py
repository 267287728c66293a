"""Audit event persistence: appended and read by the app, removed only by the retention purge
(migration 0011_audit_events: the app role has no UPDATE or DELETE on the table)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import DateTime, Index, String, Uuid, bindparam, column, func, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.expression import ClauseElement

from tenantry.domain.audit import (
    AUDIT_PAGE_MAX,
    AuditEvent,
    AuditQuery,
    AuditRepository,
    PlatformAuditTrail,
)
from tenantry.infrastructure.db.base import TenantOwned
from tenantry.infrastructure.db.repository import PlatformRows, SqlRepository
from tenantry.infrastructure.db.tenancy import append_at_commit

# In a session's info when the trail is switched off (the setting audit_trail).
TRAIL_OFF = "audit_trail_off"

# The query's equality filters, by column name.
_EQUAL = ("actor_id", "action", "target_type", "target_id")
# The query's bounds: the cursor (an id) and the time range.
_RANGES = ("before", "since", "until")


class AuditModel(TenantOwned):
    __tablename__ = "audit_events"
    # No foreign key on the actor or the target: an event outlives what it names. Pages run
    # newest first by id (UUIDv7), so each filter's index ends in id.
    __table_args__ = (
        Index("ix_audit_events_tenant_action", "tenant_id", "action", "id"),
        Index("ix_audit_events_tenant_target", "tenant_id", "target_type", "target_id", "id"),
        Index("ix_audit_events_tenant_actor", "tenant_id", "actor_id", "id"),
        # The retention purge.
        Index("ix_audit_events_tenant_created", "tenant_id", "created_at"),
    )

    # No foreign key to the tenant either: its check locked the tenant's row on every audited
    # write (0017_audit_without_tenant_key). remove_erased_tenant deletes the events instead.
    tenant_id: Mapped[UUID] = mapped_column(primary_key=True, sort_order=-110)
    actor_type: Mapped[str] = mapped_column(String(20))
    actor_id: Mapped[UUID | None]
    api_key_id: Mapped[UUID | None]
    action: Mapped[str] = mapped_column(String(100))
    target_type: Mapped[str] = mapped_column(String(50))
    target_id: Mapped[UUID | None]
    request_id: Mapped[str | None] = mapped_column(String(128))
    client: Mapped[str | None] = mapped_column(String(255))
    changes: Mapped[dict[str, Any]] = mapped_column(
        JSONB, default=dict, server_default=text("'{}'::jsonb")
    )


class SqlAuditRepository(SqlRepository[AuditEvent]):
    model = AuditModel
    entity = AuditEvent
    port = AuditRepository

    async def append(self, **values: Any) -> None:
        if not self.session.info.get(TRAIL_OFF):
            append_at_commit(self.session, self.table(), self.tenant_id, self._new_row(values))

    async def page(self, query: AuditQuery) -> list[AuditEvent]:
        where = {name: value for name in _EQUAL if (value := getattr(query, name)) is not None}
        keys = tuple(sorted(where))
        bounds = tuple(name for name in _RANGES if getattr(query, name) is not None)
        table = self.table()

        # Compiled once per shape (which filters are given); the values are its arguments.
        def build() -> ClauseElement:
            created = table.c.created_at
            conditions = []
            if "before" in bounds:
                conditions.append(table.c.id < bindparam("before", type_=table.c.id.type))
            if "since" in bounds:
                conditions.append(created >= bindparam("since", type_=created.type))
            if "until" in bounds:
                conditions.append(created < bindparam("until", type_=created.type))
            return (
                select(table)
                .where(*self.compiled_filters(where=keys), *conditions)
                .order_by(table.c.id.desc())
                .limit(bindparam("limit"))
            )

        values = self.arguments(
            where,
            before=query.before,
            since=query.since,
            until=query.until,
            limit=min(query.limit, AUDIT_PAGE_MAX),
        )
        rows = await self.statement(("page", keys, bounds), build).fetch(self.session, **values)
        return [self.to_entity(row) for row in rows]

    async def purge(self, before: datetime, batch: int) -> int:
        # The function deletes under the tenant policy for the tenant it is given: this one.
        purged = await self.session.scalar(
            select(func.purge_audit_events(self.tenant_id, before, batch))
        )
        return int(purged or 0)


# The function returns whole event rows; these are the columns of an AuditEvent, typed as the
# model types them.
_EVENT_COLUMNS = [
    column(c.name, c.type) for c in AuditModel.__table__.c if c.name in AuditEvent.__struct_fields__
]


class SqlPlatformAuditTrail(PlatformRows):
    """Every tenant's events through ``tenantry_platform_audit``, a function of the maintenance
    role (migration 0018_platform_audit): the app role's own reads see one tenant at most."""

    port = PlatformAuditTrail

    async def page(self, query: AuditQuery) -> list[AuditEvent]:
        call = func.tenantry_platform_audit(
            bindparam("before", query.before, type_=Uuid),
            min(query.limit, AUDIT_PAGE_MAX),
            bindparam("actor", query.actor_id, type_=Uuid),
            bindparam("act", query.action, type_=String),
            bindparam("target_kind", query.target_type, type_=String),
            bindparam("target", query.target_id, type_=Uuid),
            bindparam("since", query.since, type_=DateTime(timezone=True)),
            bindparam("until", query.until, type_=DateTime(timezone=True)),
        )
        rows = await self.session.execute(select(call.table_valued(*_EVENT_COLUMNS)))
        return [msgspec.convert(row, AuditEvent, from_attributes=True) for row in rows]

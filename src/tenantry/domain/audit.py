"""The audit trail: who changed what in a tenant, and when. One event per successful change,
appended in the change's own transaction; never changed or removed by the app (only the
retention purge ages events out)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol
from uuid import UUID

import msgspec

from tenantry.domain.repository import Repository

AUDIT_PAGE_MAX = 200


class ActorType(StrEnum):
    """Who acted: a signed-in user, an API key, or a platform superuser."""

    USER = "user"
    API_KEY = "api_key"
    SUPERUSER = "superuser"
    SYSTEM = "system"


class AuditEvent(msgspec.Struct, kw_only=True, frozen=True):
    id: UUID
    tenant_id: UUID
    actor_type: str
    actor_id: UUID | None
    api_key_id: UUID | None
    action: str
    target_type: str
    target_id: UUID | None
    request_id: str | None
    client: str | None
    changes: dict[str, Any]
    created_at: datetime


class AuditQuery(msgspec.Struct, kw_only=True, frozen=True):
    """A page of events, newest first: those older than the ``before`` event (a cursor: the
    last id of the previous page), narrowed by the filters given."""

    limit: int = 50
    before: UUID | None = None
    actor_id: UUID | None = None
    action: str | None = None
    target_type: str | None = None
    target_id: UUID | None = None
    since: datetime | None = None
    until: datetime | None = None


class AuditRepository(Repository[AuditEvent], Protocol):
    """One tenant's audit events."""

    async def append(self, **values: Any) -> None:
        """Add an event, written by the commit of the transaction (as part of it): none if
        the transaction is rolled back or its commit fails."""
        ...

    async def page(self, query: AuditQuery) -> list[AuditEvent]:
        """Up to ``query.limit`` events matching the query, newest first."""
        ...

    async def purge(self, before: datetime, batch: int) -> int:
        """Remove at most ``batch`` of the tenant's events created before ``before`` (the
        retention purge, the one removal there is); how many were removed."""
        ...


class PlatformAuditTrail(Protocol):
    """Every tenant's audit events at once: what platform superusers read."""

    async def page(self, query: AuditQuery) -> list[AuditEvent]:
        """Up to ``query.limit`` events of any tenant matching the query, newest first."""
        ...

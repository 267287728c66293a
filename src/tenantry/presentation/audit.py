"""The audit trail: the caller's tenant's, for its owners and admins; any tenant's, for
platform superusers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar
from uuid import UUID

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter

from tenantry.application.audit import ListAuditEvents, ListTenantAuditEvents
from tenantry.domain.audit import AUDIT_PAGE_MAX, ActorType, AuditEvent, AuditQuery
from tenantry.domain.auth import Actor
from tenantry.presentation.bodies import NO_NUL
from tenantry.presentation.errors import PARAMETER_ERRORS, problems
from tenantry.presentation.pagination import instant
from tenantry.presentation.reads import Read
from tenantry.presentation.security import SIGNED_IN_ERRORS, requires_manager, requires_superuser

AuditLimit = Annotated[
    int, QueryParameter(ge=1, le=AUDIT_PAGE_MAX, description=f"Page size (1 to {AUDIT_PAGE_MAX}).")
]
Cursor = Annotated[
    UUID | None,
    QueryParameter(description="The next_cursor of the previous page: the events before it."),
]
ActionFilter = Annotated[
    str | None,
    QueryParameter(max_length=100, pattern=NO_NUL, description="An action, as project.deleted."),
]
# "actor" in the query string; the handlers' actor is the caller.
ActorFilter = Annotated[
    UUID | None,
    QueryParameter(name="actor", description="The user who acted (an API key's user for a key)."),
]
TenantFilter = Annotated[
    UUID | None,
    QueryParameter(description="The tenant whose trail to read; every tenant's when left out."),
]
TargetIdFilter = Annotated[
    UUID | None, QueryParameter(name="target", description="The target's id.")
]
TargetTypeFilter = Annotated[
    str | None,
    QueryParameter(max_length=50, pattern=NO_NUL, description="A target type, as project."),
]

Since = Annotated[
    str | None,
    QueryParameter(format="date-time", max_length=64, description="Events at or after this time."),
]
Until = Annotated[
    str | None,
    QueryParameter(format="date-time", max_length=64, description="Events before this time."),
]


class AuditEventRead(Read):
    """One entry of the audit trail: who did what to which resource, from which request, and
    what changed."""

    example: ClassVar[dict[str, Any]] = {
        "action": "project.updated",
        "target_type": "project",
        "client": "203.0.113.7",
        "changes": {"name": ["Website", "Website relaunch"]},
    }

    id: UUID
    tenant_id: UUID
    actor_type: ActorType
    actor_id: UUID | None
    api_key_id: UUID | None
    action: str
    target_type: str
    target_id: UUID | None
    request_id: str | None
    client: str | None
    changes: dict[str, Any]
    created_at: datetime


class AuditPage(msgspec.Struct):
    """A page of the audit trail, newest first, with the cursor of the next page."""

    example: ClassVar[dict[str, Any]] = {"next_cursor": "1d2e3f4a-5b6c-4d7e-8f9a-0b1c2d3e4f5a"}

    items: list[AuditEventRead]
    # Pass as ``before`` for the next page; null on the last.
    next_cursor: UUID | None


def read_audit_query(
    limit: AuditLimit = 50,
    before: Cursor = None,
    acted_by: ActorFilter = None,
    action: ActionFilter = None,
    target_type: TargetTypeFilter = None,
    target: TargetIdFilter = None,
    since: Since = None,
    until: Until = None,
) -> AuditQuery:
    """The filters and page of both trails, read from the query string."""
    return AuditQuery(
        limit=limit,
        before=before,
        actor_id=acted_by,
        action=action,
        target_type=target_type,
        target_id=target,
        since=instant(since, "since"),
        until=instant(until, "until"),
    )


def audit_page(events: list[AuditEvent], query: AuditQuery) -> AuditPage:
    return AuditPage(
        items=AuditEventRead.each(events),
        next_cursor=events[-1].id if len(events) == query.limit else None,
    )


QUERY = {"audit_query": Provide(read_audit_query, sync_to_thread=False)}


class AuditController(Controller):
    path = "/api/v1/audit"
    tags = ["audit"]
    dependencies = QUERY

    @get(
        summary="The audit trail of your tenant, newest first (owners and admins)",
        guards=[requires_manager],
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 403),
    )
    async def list_audit_events(
        self,
        actor: NamedDependency[Actor],
        list_audit_events: NamedDependency[ListAuditEvents],
        audit_query: NamedDependency[AuditQuery],
    ) -> AuditPage:
        return audit_page(await list_audit_events(actor, audit_query), audit_query)


class AdminAuditController(Controller):
    path = "/api/v1/admin/audit"
    tags = ["platform administration"]
    guards = [requires_superuser]
    dependencies = QUERY

    @get(
        summary="The audit trail of any tenant, or of all, newest first (superusers)",
        description="Every tenant's events, or those of the tenant named by tenant_id (GET "
        "/api/v1/admin/tenants lists the tenants). An unknown tenant is 404.",
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 403, 404),
    )
    async def list_tenant_audit_events(
        self,
        actor: NamedDependency[Actor],
        list_tenant_audit_events: NamedDependency[ListTenantAuditEvents],
        audit_query: NamedDependency[AuditQuery],
        tenant_id: TenantFilter = None,
    ) -> AuditPage:
        return audit_page(
            await list_tenant_audit_events(actor, tenant_id, audit_query), audit_query
        )

"""The audit trail: the one helper every state-changing use case calls inside its transaction,
the reading of the trail by a tenant's owners and admins and by platform superusers, and its
retention purge.

An event is written by the change's own unit of work before its commit, so a change that
fails or is rolled back leaves no event, and one that commits has exactly one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from datetime import timedelta
from typing import Any
from uuid import UUID

import msgspec

from tenantry.domain.audit import (
    ActorType,
    AuditEvent,
    AuditQuery,
    AuditRepository,
    PlatformAuditTrail,
)
from tenantry.domain.auth import Actor
from tenantry.domain.errors import Forbidden, found
from tenantry.domain.ids import id_time, new_id
from tenantry.domain.ports import Clock, UnitOfWork
from tenantry.domain.webhooks import WebhookDeliveryRepository, event_of, event_payload


class Origin(msgspec.Struct, kw_only=True, frozen=True):
    """Where the change came from: the request's id and the client's address."""

    request_id: str | None = None
    client: str | None = None


# A worker's changes come from no request.
NO_ORIGIN = Origin()
# Set by the request layer for each request (presentation/middleware.py).
ORIGIN: ContextVar[Origin] = ContextVar("audit_origin", default=NO_ORIGIN)


def actor_type(actor: Actor | None) -> ActorType:
    if actor is None:
        return ActorType.SYSTEM
    if actor.api_key_id is not None:
        return ActorType.API_KEY
    return ActorType.SUPERUSER if actor.is_superuser else ActorType.USER


async def record(
    uow: UnitOfWork,
    actor: Actor | None,
    action: str,
    target: tuple[str, UUID | None],
    *,
    tenant_id: UUID | None = None,
    changes: Mapping[str, Any] | None = None,
) -> None:
    """Append the event of ``action`` (``"project.deleted"``) on ``target`` (its type and id)
    to the trail of ``tenant_id`` (the actor's tenant by default), in ``uow``'s transaction.
    ``actor`` None is the system (a worker's own change).

    A change that is a webhook event (``event_of``) is published to the tenant's subscribed
    endpoints by the same transaction: the outbox, written with the change or not at all."""
    tenant = tenant_id if tenant_id is not None else actor.tenant_id if actor else None
    if tenant is None:
        raise ValueError("a system change names the tenant it changed")
    origin = ORIGIN.get()
    target_type, target_id = target
    await uow.repository(AuditRepository, tenant).append(
        actor_type=actor_type(actor).value,
        actor_id=actor.user_id if actor else None,
        api_key_id=actor.api_key_id if actor else None,
        action=action,
        target_type=target_type,
        target_id=target_id,
        request_id=origin.request_id,
        client=origin.client,
        changes=dict(changes or {}),
    )
    if (event_type := event_of(action, changes or {})) is not None:
        event_id = new_id()
        payload = event_payload(
            event_type, at=id_time(event_id), tenant_id=tenant, target=target, changes=changes
        )
        await uow.repository(WebhookDeliveryRepository, tenant).publish(
            event_id, event_type, payload
        )


def snapshot(entity: msgspec.Struct, shown: Iterable[str]) -> dict[str, Any]:
    """The ``shown`` fields of an entity as it is (created) or was (deleted)."""
    values = msgspec.to_builtins(entity)
    return {name: values[name] for name in shown}


def changed(
    before: msgspec.Struct, after: msgspec.Struct, *, shown: Iterable[str], hidden: Iterable[str]
) -> dict[str, Any]:
    """The small before/after of an update: the ``shown`` fields that changed, with their
    values; the ``hidden`` ones (content bodies, secrets) that changed, by name only."""
    old, new = msgspec.to_builtins(before), msgspec.to_builtins(after)
    values = [name for name in shown if old.get(name) != new.get(name)]
    result: dict[str, Any] = {
        "before": {name: old.get(name) for name in values},
        "after": {name: new.get(name) for name in values},
    }
    if names := [name for name in hidden if old.get(name) != new.get(name)]:
        result["changed"] = names
    return result


class ListAuditEvents:
    """A page of the caller's tenant's trail, newest first."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, actor: Actor, query: AuditQuery) -> list[AuditEvent]:
        if not actor.can_manage:
            raise Forbidden("Only the tenant's owners and admins may read its audit trail.")
        async with self.uow:
            return await self.uow.repository(AuditRepository, actor.tenant_id).page(query)


class ListTenantAuditEvents:
    """A page of one tenant's trail, or of every tenant's at once (``tenant_id`` None), for
    platform superusers."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(
        self, actor: Actor, tenant_id: UUID | None, query: AuditQuery
    ) -> list[AuditEvent]:
        if not actor.is_superuser:
            raise Forbidden("Only platform superusers may do this.")
        async with self.uow:
            if tenant_id is None:
                return await self.uow.platform(PlatformAuditTrail).page(query)
            found(await self.uow.tenants.get(tenant_id), "No such tenant.")
            return await self.uow.repository(AuditRepository, tenant_id).page(query)


class PurgeAuditEvents:
    """The retention purge: every tenant's events older than ``retention``, removed ``batch``
    at a time, each batch in a short transaction of its own. A run cut short has lost nothing
    and left nothing half done; the next run goes on where it stopped."""

    def __init__(self, uow: UnitOfWork, clock: Clock) -> None:
        self.uow = uow
        self.clock = clock

    async def __call__(self, *, retention: timedelta, batch: int = 1000) -> int:
        uow, before = self.uow, self.clock.now() - retention
        purged = offset = 0
        async with uow:
            while True:
                tenants, total = await uow.tenants.list(limit=batch, offset=offset)
                for tenant in tenants:
                    audit = uow.repository(AuditRepository, tenant.id)
                    while True:
                        count = await audit.purge(before, batch)
                        await uow.commit()
                        purged += count
                        if count < batch:
                            break
                offset += batch
                if offset >= total:
                    return purged

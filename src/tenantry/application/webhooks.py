"""Webhooks: a tenant's owners and admins register endpoints; the events of its changes are
delivered to them by the workers, signed, retried, logged, and given up on after a while.

The events themselves are published by :func:`tenantry.application.audit.record`, the one
helper every change calls inside its transaction (the outbox).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec

from tenantry.application.audit import record
from tenantry.application.ownership import creator
from tenantry.application.tasks import UnitOfWorkFactory
from tenantry.domain.auth import Actor
from tenantry.domain.errors import Conflict, Forbidden, Invalid, NotFound, found
from tenantry.domain.ids import new_id
from tenantry.domain.ports import Clock, UnitOfWork
from tenantry.domain.repository import ListQuery, given
from tenantry.domain.webhooks import (
    DESCRIPTION_MAX_LENGTH,
    ENDPOINTS_MAX,
    PING,
    DeliveryAttempt,
    DeliveryStatus,
    DueDelivery,
    SendOutcome,
    WebhookDelivery,
    WebhookDeliveryRepository,
    WebhookDispatch,
    WebhookEndpoint,
    WebhookEndpointRepository,
    WebhookPolicy,
    WebhookSender,
    clean_events,
    clean_url,
    event_payload,
    new_secret,
    signed_headers,
)

# What the trail shows of an endpoint: never its secret.
SHOWN = ("url", "events", "description", "active")
NO_SUCH_WEBHOOK = "No such webhook."


class IssuedWebhook(msgspec.Struct, frozen=True):
    """A new endpoint and its signing secret, shown this once."""

    endpoint: WebhookEndpoint
    secret: str


def _require_manager(actor: Actor) -> None:
    if not actor.can_manage:
        raise Forbidden("Only the tenant's owners and admins may manage its webhooks.")


def _clean_description(description: str) -> str:
    if len(description) > DESCRIPTION_MAX_LENGTH or "\x00" in description:
        raise Invalid(
            "The webhook is not valid.",
            fields={"description": f"must be at most {DESCRIPTION_MAX_LENGTH} characters"},
        )
    return description


def _shown(endpoint: WebhookEndpoint) -> dict[str, Any]:
    values = msgspec.to_builtins(endpoint)
    return {name: values[name] for name in SHOWN}


class CreateWebhook:
    def __init__(self, uow: UnitOfWork, policy: WebhookPolicy) -> None:
        self.uow = uow
        self.policy = policy

    async def __call__(
        self,
        actor: Actor,
        *,
        url: str,
        events: Sequence[str],
        description: str = "",
        active: bool = True,
    ) -> IssuedWebhook:
        _require_manager(actor)
        values = {
            "url": clean_url(url, allow_http=self.policy.allow_http),
            "events": clean_events(events),
            "description": _clean_description(description),
            "active": active,
        }
        secret = new_secret()
        async with self.uow:
            endpoints = self.uow.repository(WebhookEndpointRepository, actor.tenant_id)
            if await endpoints.count() >= ENDPOINTS_MAX:
                raise Conflict(f"A tenant has at most {ENDPOINTS_MAX} webhook endpoints.")
            endpoint = await endpoints.add(**values, secret=secret, created_by=creator(actor))
            await record(
                self.uow,
                actor,
                "webhook.created",
                ("webhook", endpoint.id),
                changes={"after": _shown(endpoint)},
            )
            await self.uow.commit()
        return IssuedWebhook(endpoint, secret)


class ListWebhooks:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(
        self, actor: Actor, query: ListQuery
    ) -> tuple[Sequence[WebhookEndpoint], int]:
        _require_manager(actor)
        async with self.uow:
            return await self.uow.repository(WebhookEndpointRepository, actor.tenant_id).list(query)


class GetWebhook:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, actor: Actor, webhook_id: UUID) -> WebhookEndpoint:
        _require_manager(actor)
        async with self.uow:
            endpoints = self.uow.repository(WebhookEndpointRepository, actor.tenant_id)
            return found(await endpoints.get(webhook_id), NO_SUCH_WEBHOOK)


class UpdateWebhook:
    """Change an endpoint. Switching it on again ends what switched it off: its failing streak
    starts over."""

    def __init__(self, uow: UnitOfWork, policy: WebhookPolicy) -> None:
        self.uow = uow
        self.policy = policy

    async def __call__(
        self,
        actor: Actor,
        webhook_id: UUID,
        *,
        expected_version: int | None,
        url: str | None = None,
        events: Sequence[str] | None = None,
        description: str | None = None,
        active: bool | None = None,
    ) -> WebhookEndpoint:
        _require_manager(actor)
        changes = given(
            url=None if url is None else clean_url(url, allow_http=self.policy.allow_http),
            events=None if events is None else clean_events(events),
            description=None if description is None else _clean_description(description),
            active=active,
        )
        if active:
            changes |= {"disabled_reason": None, "failing_since": None, "failures": 0}
        async with self.uow:
            endpoints = self.uow.repository(WebhookEndpointRepository, actor.tenant_id)
            before, endpoint = found(
                await endpoints.update_with_before(
                    webhook_id, changes, expected_version=expected_version
                ),
                NO_SUCH_WEBHOOK,
            )
            old, new = _shown(before), _shown(endpoint)
            names = [name for name in SHOWN if old[name] != new[name]]
            await record(
                self.uow,
                actor,
                "webhook.updated",
                ("webhook", webhook_id),
                changes={
                    "before": {name: old[name] for name in names},
                    "after": {name: new[name] for name in names},
                },
            )
            await self.uow.commit()
        return endpoint


class DeleteWebhook:
    """Remove an endpoint and its deliveries, sent or not."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, actor: Actor, webhook_id: UUID) -> None:
        _require_manager(actor)
        async with self.uow:
            endpoints = self.uow.repository(WebhookEndpointRepository, actor.tenant_id)
            endpoint = found(await endpoints.get(webhook_id), NO_SUCH_WEBHOOK)
            # One deleted meanwhile is gone for this request too (see DeleteProject).
            if not await endpoints.delete(webhook_id):
                raise NotFound(NO_SUCH_WEBHOOK)
            await record(
                self.uow,
                actor,
                "webhook.deleted",
                ("webhook", webhook_id),
                changes={"before": _shown(endpoint)},
            )
            await self.uow.commit()


class ListWebhookDeliveries:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(
        self, actor: Actor, webhook_id: UUID, *, limit: int, offset: int
    ) -> tuple[Sequence[WebhookDelivery], int]:
        _require_manager(actor)
        async with self.uow:
            endpoints = self.uow.repository(WebhookEndpointRepository, actor.tenant_id)
            found(await endpoints.get(webhook_id), NO_SUCH_WEBHOOK)
            deliveries = self.uow.repository(WebhookDeliveryRepository, actor.tenant_id)
            return await deliveries.page(webhook_id, limit=limit, offset=offset)


class RedeliverWebhook:
    """Send a delivery again, whatever became of it: a new round of tries starts now."""

    def __init__(self, uow: UnitOfWork, clock: Clock) -> None:
        self.uow = uow
        self.clock = clock

    async def __call__(self, actor: Actor, webhook_id: UUID, delivery_id: UUID) -> WebhookDelivery:
        _require_manager(actor)
        now = self.clock.now()
        async with self.uow:
            deliveries = self.uow.repository(WebhookDeliveryRepository, actor.tenant_id)
            delivery = found(
                await deliveries.update(
                    delivery_id,
                    {
                        "status": DeliveryStatus.PENDING,
                        "next_attempt_at": now,
                        "tries_since": now,
                    },
                    endpoint_id=webhook_id,
                ),
                "No such delivery.",
            )
            await record(
                self.uow,
                actor,
                "webhook.redelivered",
                ("webhook", webhook_id),
                changes={"delivery_id": str(delivery_id), "event_type": delivery.event_type},
            )
            await self.uow.commit()
        return delivery


class PingWebhook:
    """A ``webhook.ping`` event to one endpoint, delivered as any other: the way to check that
    the receiver is reachable and verifies signatures."""

    def __init__(self, uow: UnitOfWork, clock: Clock) -> None:
        self.uow = uow
        self.clock = clock

    async def __call__(self, actor: Actor, webhook_id: UUID) -> WebhookDelivery:
        _require_manager(actor)
        now = self.clock.now()
        async with self.uow:
            endpoints = self.uow.repository(WebhookEndpointRepository, actor.tenant_id)
            # Held: deleted at the same moment, it takes the ping with it, or is not found.
            endpoint = found(await endpoints.held(webhook_id), NO_SUCH_WEBHOOK)
            if not endpoint.active:
                raise Conflict("The webhook is not active: switch it on to ping it.")
            event_id = new_id()
            delivery = await self.uow.repository(WebhookDeliveryRepository, actor.tenant_id).add(
                endpoint_id=webhook_id,
                event_id=event_id,
                event_type=PING,
                payload=event_payload(
                    PING, at=now, tenant_id=actor.tenant_id, target=("webhook", webhook_id)
                ),
                next_attempt_at=now,
                tries_since=now,
            )
            await self.uow.commit()
        return delivery


class Delivered(msgspec.Struct, frozen=True):
    """One claimed delivery and what became of it (None: nothing to send any more)."""

    claimed: DueDelivery
    status: DeliveryStatus | None
    event_type: str | None = None
    outcome: SendOutcome | None = None


class DeliverWebhooks:
    """One round of the workers' delivery: claim what is due, send each, record each attempt.

    Claimed deliveries are leased (see :class:`WebhookDispatch`): a worker that dies before
    recording an attempt leaves the delivery to be sent again when the lease ends, so every
    event is delivered at least once. No connection is held while a request is in flight."""

    def __init__(
        self,
        *,
        units: UnitOfWorkFactory,
        sender: WebhookSender,
        clock: Clock,
        policy: WebhookPolicy,
        batch: int = 20,
        per_endpoint: int = 5,
    ) -> None:
        self.units = units
        self.sender = sender
        self.clock = clock
        self.policy = policy
        self.batch = batch
        self.per_endpoint = per_endpoint

    async def __call__(self) -> list[Delivered]:
        """What this round claimed, each with what became of it."""
        async with self.units() as uow:
            due = await uow.platform(WebhookDispatch).claim(
                lease=self.policy.lease, batch=self.batch, per_endpoint=self.per_endpoint
            )
            await uow.commit()
        return list(await asyncio.gather(*(self.deliver(claimed) for claimed in due)))

    async def deliver(self, claimed: DueDelivery) -> Delivered:
        """Send one claimed delivery and record the attempt. Nothing is sent for a delivery
        whose endpoint was switched off or removed meanwhile, or that is no longer pending."""
        async with self.units() as uow:
            endpoints = uow.repository(WebhookEndpointRepository, claimed.tenant_id)
            endpoint = await endpoints.get(claimed.endpoint_id)
            secret = await endpoints.secret(claimed.endpoint_id)
            delivery = await uow.repository(WebhookDeliveryRepository, claimed.tenant_id).get(
                claimed.id
            )
        if endpoint is None or secret is None or delivery is None or not endpoint.active:
            return Delivered(claimed, None)
        if delivery.status is not DeliveryStatus.PENDING:
            return Delivered(claimed, None, delivery.event_type)
        started = self.clock.now()
        deadline = delivery.tries_since + self.policy.give_up_after
        if started >= deadline:
            outcome = SendOutcome(duration_ms=0, error="given up: no success within the time")
        else:
            body = msgspec.json.encode(delivery.payload)
            headers = signed_headers(secret, delivery.event_id, started, body)
            outcome = await self.sender.send(endpoint.url, headers, body)
        status = await self._record(claimed, endpoint, delivery, outcome, started, deadline)
        return Delivered(claimed, status, delivery.event_type, outcome)

    async def _record(
        self,
        claimed: DueDelivery,
        endpoint: WebhookEndpoint,
        delivery: WebhookDelivery,
        outcome: SendOutcome,
        started: datetime,
        deadline: datetime,
    ) -> DeliveryStatus:
        now = self.clock.now()
        retry_at = now + self.policy.retry_in(delivery.attempts)
        if outcome.succeeded:
            status = DeliveryStatus.SUCCEEDED
        else:
            status = DeliveryStatus.PENDING if retry_at < deadline else DeliveryStatus.FAILED
        attempt = DeliveryAttempt(
            attempt=delivery.attempts,
            at=started,
            duration_ms=outcome.duration_ms,
            succeeded=outcome.succeeded,
            response_status=outcome.status,
            response_body=outcome.body,
            error=outcome.error,
        )
        async with self.units() as uow:
            # The endpoint's row before its delivery's: the order the endpoint's delete takes
            # them (its deliveries go by the key's cascade); the other way round, a delete
            # meanwhile deadlocked with this.
            endpoints = uow.repository(WebhookEndpointRepository, claimed.tenant_id)
            await endpoints.attempted(claimed.endpoint_id, succeeded=outcome.succeeded, at=now)
            if not outcome.succeeded and self._worn_out(endpoint, now):
                await self._disable(uow, endpoint, now)
            await uow.repository(WebhookDeliveryRepository, claimed.tenant_id).attempted(
                claimed.id, attempt, status=status, next_attempt_at=retry_at
            )
            await uow.commit()
        return status

    def _worn_out(self, endpoint: WebhookEndpoint, now: datetime) -> bool:
        """This failure is one too many: the endpoint has failed every attempt for long enough,
        often enough."""
        since = endpoint.failing_since or now
        return (
            endpoint.failures + 1 >= self.policy.disable_failures
            and now - since >= self.policy.disable_after
        )

    async def _disable(self, uow: UnitOfWork, endpoint: WebhookEndpoint, now: datetime) -> None:
        since = (endpoint.failing_since or now).isoformat(timespec="seconds")
        reason = f"Every delivery attempt failed since {since}."
        endpoints = uow.repository(WebhookEndpointRepository, endpoint.tenant_id)
        switched = await endpoints.update(
            endpoint.id, {"active": False, "disabled_reason": reason}, active=True
        )
        if switched is not None:
            await record(
                uow,
                None,
                "webhook.disabled",
                ("webhook", endpoint.id),
                tenant_id=endpoint.tenant_id,
                changes={"reason": reason},
            )


class PurgeWebhookDeliveries:
    """Finished deliveries older than the retention go, a batch at a time."""

    def __init__(self, *, units: UnitOfWorkFactory, clock: Clock) -> None:
        self.units = units
        self.clock = clock

    async def __call__(self, retention: timedelta, batch: int = 1000) -> int:
        before = self.clock.now() - retention
        purged = 0
        while True:
            async with self.units() as uow:
                count = await uow.platform(WebhookDispatch).purge(before, batch=batch)
                await uow.commit()
            purged += count
            if count == 0:
                return purged

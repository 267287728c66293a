"""Webhooks: a tenant's endpoints, the events they subscribe to, and each event's delivery.

An event is written with the change it tells of (an outbox: one delivery row per subscribed
endpoint, in the change's own transaction), then delivered by a worker, signed the Standard
Webhooks way (https://www.standardwebhooks.com): headers ``webhook-id`` (the event's id, the
same at every attempt and for every endpoint), ``webhook-timestamp`` (Unix seconds) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, keyed with the
endpoint's secret, shown once as ``whsec_<base64>``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import urlsplit
from uuid import UUID

import msgspec

from tenantry.domain.errors import Invalid
from tenantry.domain.repository import Repository

SECRET_PREFIX = "whsec_"
URL_MAX_LENGTH = 2000
DESCRIPTION_MAX_LENGTH = 500
# A tenant's endpoints: enough for every integration, few enough to fan out in one statement.
ENDPOINTS_MAX = 20

# What a tenant may subscribe to: ``<entity>.<past tense>``.
EVENT_TYPES = (
    "task.completed",
    "task.failed",
    "task.cancelled",
    "file.uploaded",
    "file.deleted",
    "project.created",
    "project.updated",
    "project.deleted",
    "document.created",
    "document.updated",
    "document.deleted",
    "user.added",
    "user.updated",
    "user.removed",
)
# Sent by the test-ping endpoint to its endpoint alone, whatever it subscribes to.
PING = "webhook.ping"

# The audit trail's action of a change, and the event it is to subscribers. A task's are the
# worker's (its handler's outcome, or a reaper's verdict); a user's cancellation of a pending
# task ends it at once (see event_of).
_EVENT_OF_ACTION = {
    "task.succeeded": "task.completed",
    "task.failed": "task.failed",
    "task.reaped": "task.failed",
    "task.stopped": "task.cancelled",
    "file.uploaded": "file.uploaded",
    "file.deleted": "file.deleted",
    "project.created": "project.created",
    "project.updated": "project.updated",
    "project.deleted": "project.deleted",
    "document.created": "document.created",
    "document.updated": "document.updated",
    "document.deleted": "document.deleted",
    "user.created": "user.added",
    "user.updated": "user.updated",
    "user.deleted": "user.removed",
}


def event_of(action: str, changes: Mapping[str, Any]) -> str | None:
    """The webhook event a change recorded as ``action`` is, if any. A cancellation asked of a
    pending task ends it there; one asked of a running task ends later, by its worker."""
    if action == "task.cancelled":
        after = changes.get("after")
        cancelled = isinstance(after, Mapping) and after.get("status") == "cancelled"
        return "task.cancelled" if cancelled else None
    return _EVENT_OF_ACTION.get(action)


class DeliveryStatus(StrEnum):
    """Where a delivery stands: pending (attempts left), succeeded, or failed (none left)."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WebhookEndpoint(msgspec.Struct, kw_only=True, frozen=True):
    id: UUID
    tenant_id: UUID
    url: str
    events: list[str]
    description: str
    active: bool
    # Why the endpoint was switched off by the platform (sustained failure); None otherwise.
    disabled_reason: str | None
    # The first failed attempt since the last success, and the failed attempts since.
    failing_since: datetime | None
    failures: int
    created_by: UUID | None
    version: int
    created_at: datetime
    updated_at: datetime


class DeliveryAttempt(msgspec.Struct, kw_only=True, frozen=True):
    """One try at delivering: what the receiver answered, or why there was no answer."""

    attempt: int
    at: datetime
    duration_ms: int
    succeeded: bool
    response_status: int | None = None
    response_body: str | None = None
    error: str | None = None


class WebhookDelivery(msgspec.Struct, kw_only=True, frozen=True):
    id: UUID
    tenant_id: UUID
    endpoint_id: UUID
    # The ``webhook-id`` header: the event's, the same for each endpoint and attempt.
    event_id: UUID
    event_type: str
    payload: dict[str, Any]
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    # When the current round of tries began: its event, or the last redelivery.
    tries_since: datetime
    log: list[DeliveryAttempt]
    created_at: datetime
    updated_at: datetime


class DueDelivery(msgspec.Struct, frozen=True):
    """A delivery a worker has claimed: it is leased to that worker until the lease ends."""

    tenant_id: UUID
    endpoint_id: UUID
    id: UUID


class SendOutcome(msgspec.Struct, kw_only=True, frozen=True):
    """What became of one HTTP request: a status (2xx is a delivery), or an error."""

    duration_ms: int
    status: int | None = None
    body: str | None = None
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class WebhookPolicy(msgspec.Struct, kw_only=True, frozen=True):
    """How deliveries are retried and when an endpoint is given up on."""

    # A claimed delivery is leased this long: a worker killed mid-delivery leaves it to be
    # claimed again when the lease ends (at-least-once).
    lease: timedelta = timedelta(seconds=60)
    # The wait after the first failed attempt, doubled after each one, up to retry_max.
    retry_first: timedelta = timedelta(seconds=10)
    retry_max: timedelta = timedelta(hours=2)
    # A delivery still failing this long after its event is failed for good.
    give_up_after: timedelta = timedelta(days=1)
    # An endpoint whose every attempt failed for this long, at least disable_failures
    # times, is switched off.
    disable_after: timedelta = timedelta(days=5)
    disable_failures: int = 10
    # Whether an endpoint may be plain http (development); https otherwise.
    allow_http: bool = False

    def retry_in(self, attempts: int) -> timedelta:
        """The wait after the ``attempts``-th failed attempt."""
        doubled: timedelta = self.retry_first * 2 ** min(max(attempts - 1, 0), 30)
        return min(doubled, self.retry_max)


def event_payload(
    event_type: str,
    *,
    at: datetime,
    tenant_id: UUID,
    target: tuple[str, UUID | None],
    changes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The body of an event (Standard Webhooks' ``type``, ``timestamp``, ``data``). A thin
    event: what changed, by id, with the trail's before and after of it; the receiver reads
    the rest through the API."""
    kind, target_id = target
    data = {
        "tenant_id": str(tenant_id),
        "object": kind,
        "id": None if target_id is None else str(target_id),
        **msgspec.to_builtins(dict(changes or {})),
    }
    return {"type": event_type, "timestamp": at.isoformat(), "data": data}


class WebhookEndpointRepository(Repository[WebhookEndpoint], Protocol):
    """One tenant's endpoints (the generic port); their secrets apart, read by the worker."""

    async def secret(self, endpoint_id: UUID) -> str | None: ...

    async def held(self, endpoint_id: UUID) -> WebhookEndpoint | None:
        """The endpoint, held until the transaction ends (None when there is none): a delete
        of it then waits, and takes what the transaction added to it, or came first, and this
        finds none."""
        ...

    async def attempted(self, endpoint_id: UUID, *, succeeded: bool, at: datetime) -> None:
        """Count an attempt's outcome: a success ends the endpoint's failing streak."""
        ...


class WebhookDeliveryRepository(Repository[WebhookDelivery], Protocol):
    """One tenant's deliveries."""

    async def publish(self, event_id: UUID, event_type: str, payload: Mapping[str, Any]) -> None:
        """A delivery of the event to each active endpoint subscribed to ``event_type``,
        written by the commit of the transaction (as part of it): none if it rolls back."""
        ...

    async def attempted(
        self,
        delivery_id: UUID,
        attempt: DeliveryAttempt,
        *,
        status: DeliveryStatus,
        next_attempt_at: datetime,
    ) -> None:
        """Append ``attempt`` to the delivery's log and set what follows it."""
        ...

    async def page(
        self, endpoint_id: UUID, *, limit: int, offset: int
    ) -> tuple[Sequence[WebhookDelivery], int]:
        """The endpoint's deliveries, newest first, and how many there are."""
        ...


class WebhookDispatch(Protocol):
    """Every tenant's due deliveries, for the workers (a platform port)."""

    async def claim(
        self, *, lease: timedelta, batch: int, per_endpoint: int
    ) -> Sequence[DueDelivery]:
        """Lease up to ``batch`` due deliveries of active endpoints, at most ``per_endpoint``
        of each, the longest due first: a claimed delivery is due again when its lease ends,
        so one whose worker died is claimed again, and two workers never take the same."""
        ...

    async def purge(self, before: datetime, *, batch: int) -> int:
        """Remove up to ``batch`` finished deliveries of each endpoint created before
        ``before``; how many were removed."""
        ...


class WebhookSender(Protocol):
    """Sends one signed request to an endpoint (the outbound HTTP port)."""

    async def send(self, url: str, headers: Mapping[str, str], body: bytes) -> SendOutcome: ...


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks' ``webhook-signature`` value for one message."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, message_id: UUID, at: datetime, body: bytes) -> dict[str, str]:
    timestamp = int(at.timestamp())
    return {
        "content-type": "application/json",
        "webhook-id": str(message_id),
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, str(message_id), timestamp, body),
    }


def clean_url(url: str, *, allow_http: bool) -> str:
    """An endpoint's URL as registered: absolute http(s), a host, no credentials. Where it
    resolves to is checked when each request is sent (DNS can change in between)."""
    url = url.strip()
    problem = None
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        parts, host, problem = None, None, "must be an absolute URL"
    if problem is None and parts is not None:
        schemes = ("https", "http") if allow_http else ("https",)
        if parts.scheme not in schemes:
            problem = "must be an https URL" if not allow_http else "must be an http(s) URL"
        elif not host:
            problem = "must name a host"
        elif parts.username is not None or parts.password is not None:
            problem = "must not carry credentials"
        elif parts.fragment:
            problem = "must not have a fragment"
    if problem is None and len(url) > URL_MAX_LENGTH:
        problem = f"must be at most {URL_MAX_LENGTH} characters"
    if problem is not None:
        raise Invalid("The webhook is not valid.", fields={"url": problem})
    return url


def clean_events(events: Sequence[str]) -> list[str]:
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown:
        raise Invalid(
            "The webhook is not valid.",
            fields={"events": f"unknown event types: {', '.join(unknown)}"},
        )
    if not events:
        raise Invalid("The webhook is not valid.", fields={"events": "must name an event"})
    return sorted(set(events))


def address_allowed(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    allowed: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> bool:
    """Public addresses, and those of ``allowed`` networks: never a private, loopback,
    link-local or otherwise special one by default (SSRF)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in allowed):
        return True
    return address.is_global and not address.is_multicast

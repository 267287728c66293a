"""Webhook endpoints of the caller's tenant (owners and admins), and their deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

import msgspec
from litestar import Controller, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from tenantry.application.webhooks import (
    CreateWebhook,
    DeleteWebhook,
    GetWebhook,
    IssuedWebhook,
    ListWebhookDeliveries,
    ListWebhooks,
    PingWebhook,
    RedeliverWebhook,
    UpdateWebhook,
)
from tenantry.domain.auth import Actor
from tenantry.domain.webhooks import (
    DESCRIPTION_MAX_LENGTH,
    EVENT_TYPES,
    URL_MAX_LENGTH,
    DeliveryStatus,
    WebhookDelivery,
)
from tenantry.presentation.bodies import NO_NUL, StrictJSONBody
from tenantry.presentation.concurrency import (
    IfMatch,
    Version,
    expected_version,
    with_etag,
)
from tenantry.presentation.errors import BODY_ERRORS, PARAMETER_ERRORS, problems
from tenantry.presentation.pagination import Limit, Offset, Page, list_query, page
from tenantry.presentation.reads import Read
from tenantry.presentation.responses import NEW_RESOURCE, created
from tenantry.presentation.security import SIGNED_IN_ERRORS

EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
# The shape; the rest (a host, no credentials, https in production) is the domain's.
Url = Annotated[str, msgspec.Meta(max_length=URL_MAX_LENGTH, pattern=r"^https?://[^\s\x00]+$")]
Events = Annotated[list[EventType], msgspec.Meta(min_length=1, max_length=len(EVENT_TYPES))]
Description = Annotated[str, msgspec.Meta(max_length=DESCRIPTION_MAX_LENGTH, pattern=NO_NUL)]
ERRORS = (*SIGNED_IN_ERRORS, 403)


class WebhookCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new webhook endpoint: its HTTPS URL and the events it receives."""

    url: Url
    events: Events
    description: Description = ""
    active: bool = True


class WebhookUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """The changes to a webhook endpoint, and the version they are based on (or If-Match)."""

    url: Url | None = None
    events: Events | None = None
    description: Description | None = None
    active: bool | None = None
    version: Version | None = None


class WebhookRead(Read):
    """A webhook endpoint: where events go, and whether it is disabled and why."""

    id: UUID
    url: str
    events: list[str]
    description: str
    active: bool
    # Set when the platform switched the endpoint off after sustained failure.
    disabled_reason: str | None
    failing_since: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookRead):
    """A new webhook endpoint with its signing secret, the only time the secret is shown."""

    example: ClassVar[dict[str, Any]] = {"secret": "whsec_MfKQ9r8GgvNcXPr6dkL2fWo0TNwbxYHh"}

    # The signing secret, in this response only.
    secret: str

    @classmethod
    def issued(cls, issued: IssuedWebhook) -> WebhookCreated:
        # Two sources (the stored endpoint, and the secret shown this once) in one body.
        endpoint = issued.endpoint
        shown = {name: getattr(endpoint, name) for name in WebhookRead.__struct_fields__}
        return cls(**shown, secret=issued.secret)


class AttemptRead(Read):
    """One attempt of a delivery: when, how it ended and what the receiver answered."""

    attempt: int
    at: datetime
    succeeded: bool
    response_status: int | None
    duration_ms: int
    error: str | None
    # The start of the receiver's answer (1 KiB at most).
    response_body: str | None


class DeliveryRead(msgspec.Struct):
    """One event's delivery to an endpoint, with its attempts."""

    id: UUID
    webhook_id: UUID
    # The webhook-id header: the same at each attempt.
    event_id: UUID
    event_type: str
    status: DeliveryStatus
    # When the next attempt is due (pending deliveries only).
    next_attempt_at: datetime | None
    attempts: list[AttemptRead]
    payload: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> DeliveryRead:
        return cls(
            id=delivery.id,
            webhook_id=delivery.endpoint_id,
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            status=delivery.status,
            next_attempt_at=(
                delivery.next_attempt_at if delivery.status is DeliveryStatus.PENDING else None
            ),
            attempts=AttemptRead.each(delivery.log),
            payload=delivery.payload,
            created_at=delivery.created_at,
            updated_at=delivery.updated_at,
        )


class WebhookPage(Page[WebhookRead]):
    """A page of webhook endpoints."""

    items: list[WebhookRead]


class DeliveryPage(Page[DeliveryRead]):
    """A page of deliveries."""

    items: list[DeliveryRead]


class WebhookController(Controller):
    path = "/api/v1/webhooks"
    tags = ["webhooks"]

    @get(
        summary="Webhook endpoints of your tenant",
        responses=problems(*ERRORS, *PARAMETER_ERRORS),
    )
    async def list_webhooks(
        self,
        actor: NamedDependency[Actor],
        list_webhooks: NamedDependency[ListWebhooks],
        limit: Limit = 20,
        offset: Offset = 0,
    ) -> WebhookPage:
        found = await list_webhooks(actor, list_query(limit, offset))
        return page(WebhookPage, found, limit, offset)

    @post(
        response_headers=NEW_RESOURCE,
        summary="Register a webhook endpoint; its signing secret is in this response only",
        description=(
            "Deliveries are signed the Standard Webhooks way: `webhook-signature` is "
            '`v1,<base64 HMAC-SHA256 of "webhook-id.webhook-timestamp.body">` keyed with the '
            "base64-decoded part of the secret after `whsec_`."
        ),
        responses=problems(*ERRORS, *BODY_ERRORS, 409),
    )
    async def create_webhook(
        self,
        data: StrictJSONBody[WebhookCreate],
        actor: NamedDependency[Actor],
        create_webhook: NamedDependency[CreateWebhook],
    ) -> Response[WebhookCreated]:
        issued = await create_webhook(
            actor,
            url=data.url,
            events=data.events,
            description=data.description,
            active=data.active,
        )
        return created(
            WebhookCreated.issued(issued),
            f"{self.path}/{issued.endpoint.id}",
            version=issued.endpoint.version,
        )

    @get(
        "/{webhook_id:uuid}",
        summary="A webhook endpoint",
        responses=problems(*ERRORS, *PARAMETER_ERRORS, 404),
    )
    async def get_webhook(
        self,
        webhook_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        get_webhook: NamedDependency[GetWebhook],
    ) -> Response[WebhookRead]:
        return with_etag(WebhookRead, await get_webhook(actor, webhook_id))

    @patch(
        "/{webhook_id:uuid}",
        summary="Change a webhook endpoint; active=true switches a disabled one on again",
        description="Send If-Match with the ETag (or `version`) you read: a stale write is 412.",
        responses=problems(*ERRORS, *BODY_ERRORS, 404, 412),
    )
    async def update_webhook(
        self,
        webhook_id: FromPath[UUID],
        data: StrictJSONBody[WebhookUpdate],
        actor: NamedDependency[Actor],
        update_webhook: NamedDependency[UpdateWebhook],
        if_match: IfMatch = None,
    ) -> Response[WebhookRead]:
        endpoint = await update_webhook(
            actor,
            webhook_id,
            expected_version=expected_version(if_match, data.version),
            url=data.url,
            events=data.events,
            description=data.description,
            active=data.active,
        )
        return with_etag(WebhookRead, endpoint)

    @delete(
        "/{webhook_id:uuid}",
        summary="Remove a webhook endpoint and its deliveries",
        responses=problems(*ERRORS, *PARAMETER_ERRORS, 404),
    )
    async def delete_webhook(
        self,
        webhook_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        delete_webhook: NamedDependency[DeleteWebhook],
    ) -> None:
        await delete_webhook(actor, webhook_id)

    @get(
        "/{webhook_id:uuid}/deliveries",
        summary="Deliveries to an endpoint, newest first, each with its attempts",
        responses=problems(*ERRORS, *PARAMETER_ERRORS, 404),
    )
    async def list_webhook_deliveries(
        self,
        webhook_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        list_webhook_deliveries: NamedDependency[ListWebhookDeliveries],
        limit: Limit = 20,
        offset: Offset = 0,
    ) -> DeliveryPage:
        items, total = await list_webhook_deliveries(actor, webhook_id, limit=limit, offset=offset)
        return DeliveryPage(
            items=[DeliveryRead.of(item) for item in items],
            total=total,
            limit=limit,
            offset=offset,
        )

    @post(
        "/{webhook_id:uuid}/deliveries/{delivery_id:uuid}/redeliver",
        summary="Send a delivery again (a new day of retries starts now)",
        status_code=202,
        responses=problems(*ERRORS, *PARAMETER_ERRORS, 404),
    )
    async def redeliver_webhook(
        self,
        webhook_id: FromPath[UUID],
        delivery_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        redeliver_webhook: NamedDependency[RedeliverWebhook],
    ) -> DeliveryRead:
        return DeliveryRead.of(await redeliver_webhook(actor, webhook_id, delivery_id))

    @post(
        "/{webhook_id:uuid}/ping",
        summary="Send a webhook.ping event to the endpoint (delivered and logged as any other)",
        status_code=202,
        responses=problems(*ERRORS, *PARAMETER_ERRORS, 404, 409),
    )
    async def ping_webhook(
        self,
        webhook_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        ping_webhook: NamedDependency[PingWebhook],
    ) -> DeliveryRead:
        return DeliveryRead.of(await ping_webhook(actor, webhook_id))

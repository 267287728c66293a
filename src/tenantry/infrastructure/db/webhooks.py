"""Webhook endpoints and their deliveries (the outbox), and the workers' claim across tenants
(a function of the maintenance role, migration 0019_webhooks)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import (
    Boolean,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    bindparam,
    column,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.expression import ClauseElement, ColumnClause

from tenantry.domain.webhooks import (
    DeliveryAttempt,
    DeliveryStatus,
    DueDelivery,
    WebhookDelivery,
    WebhookDeliveryRepository,
    WebhookDispatch,
    WebhookEndpoint,
    WebhookEndpointRepository,
)
from tenantry.infrastructure.db.base import TenantOwned, creator_key
from tenantry.infrastructure.db.repository import PlatformRows, SqlRepository
from tenantry.infrastructure.db.tenancy import run_at_commit


class WebhookEndpointModel(TenantOwned):
    __tablename__ = "webhook_endpoints"
    __table_args__ = (creator_key(),)

    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[str]] = mapped_column(ARRAY(String(50)))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    # The signing secret: read by the worker, shown to nobody after its creation.
    secret: Mapped[str] = mapped_column(String(100))
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    failing_since: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_by: Mapped[UUID | None]
    version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))


class WebhookDeliveryModel(TenantOwned):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "endpoint_id"],
            ["webhook_endpoints.tenant_id", "webhook_endpoints.id"],
            ondelete="CASCADE",
        ),
        # An endpoint's log, newest first.
        Index("ix_webhook_deliveries_tenant_endpoint", "tenant_id", "endpoint_id", "created_at"),
        # The claim: an endpoint's due deliveries.
        Index(
            "ix_webhook_deliveries_due",
            "tenant_id",
            "endpoint_id",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
    )

    endpoint_id: Mapped[UUID]
    event_id: Mapped[UUID]
    event_type: Mapped[str] = mapped_column(String(50))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(20), default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    # When the current round of tries began (its event, or a redelivery): it ends a policy's
    # give_up_after later.
    tries_since: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    log: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, default=list, server_default=text("'[]'::jsonb")
    )


# One delivery per active endpoint of the tenant subscribed to the event (migration
# 0019_webhooks); none, at the price of one probe of the tenant's endpoints, when there is no
# such endpoint.
_PUBLISH = "SELECT tenantry_publish_webhook_event({tenant}, {event_id}, {event_type}, {payload})"


class SqlWebhookEndpointRepository(SqlRepository[WebhookEndpoint]):
    model = WebhookEndpointModel
    entity = WebhookEndpoint
    port = WebhookEndpointRepository

    async def secret(self, endpoint_id: UUID) -> str | None:
        statement = self.select(WebhookEndpointModel.secret).where(
            WebhookEndpointModel.id == endpoint_id
        )
        secret: str | None = (await self.session.execute(statement)).scalar_one_or_none()
        return secret

    async def held(self, endpoint_id: UUID) -> WebhookEndpoint | None:
        # FOR KEY SHARE: what the deliveries' key to the endpoint takes, and what its delete
        # waits for; its other changes do not.
        statement = (
            self.select()
            .where(WebhookEndpointModel.id == endpoint_id)
            .with_for_update(read=True, key_share=True)
        )
        row = (await self.session.execute(statement)).mappings().one_or_none()
        return None if row is None else self.to_entity(row)

    async def attempted(self, endpoint_id: UUID, *, succeeded: bool, at: datetime) -> None:
        model = WebhookEndpointModel
        changes: dict[str, Any] = (
            {"failing_since": None, "failures": 0}
            if succeeded
            else {
                "failing_since": func.coalesce(model.failing_since, at),
                "failures": model.failures + 1,
            }
        )
        statement = self.update_rows().where(model.id == endpoint_id).values(changes)
        await self.session.execute(statement)


class SqlWebhookDeliveryRepository(SqlRepository[WebhookDelivery]):
    model = WebhookDeliveryModel
    entity = WebhookDelivery
    port = WebhookDeliveryRepository

    async def publish(self, event_id: UUID, event_type: str, payload: Mapping[str, Any]) -> None:
        run_at_commit(
            self.session,
            self.tenant_id,
            _PUBLISH,
            tenant=self.tenant_id,
            event_id=event_id,
            event_type=event_type,
            payload=dict(payload),
        )

    async def attempted(
        self,
        delivery_id: UUID,
        attempt: DeliveryAttempt,
        *,
        status: DeliveryStatus,
        next_attempt_at: datetime,
    ) -> None:
        model = WebhookDeliveryModel
        entry = msgspec.to_builtins(attempt)
        statement = (
            self.update_rows()
            .where(model.id == delivery_id)
            .values(
                status=status.value,
                next_attempt_at=next_attempt_at,
                log=model.log.op("||")(bindparam("entry", [entry], type_=JSONB)),
                updated_at=func.now(),
            )
        )
        await self.session.execute(statement)

    async def page(
        self, endpoint_id: UUID, *, limit: int, offset: int
    ) -> tuple[Sequence[WebhookDelivery], int]:
        table = self.table()

        def build() -> ClauseElement:
            return (
                select(table)
                .where(*self.compiled_filters(where=("endpoint_id",)))
                .order_by(table.c.created_at.desc(), table.c.id.desc())
                .limit(bindparam("limit"))
                .offset(bindparam("offset"))
            )

        arguments = self.arguments({"endpoint_id": endpoint_id}, limit=limit, offset=offset)
        records = await self.statement(("page",), build).fetch(self.session, **arguments)
        total = await self.count(endpoint_id=endpoint_id)
        return [self.to_entity(record) for record in records], total


_DUE_COLUMNS: list[ColumnClause[Any]] = [column("tenant_id"), column("endpoint_id"), column("id")]


class SqlWebhookDispatch(PlatformRows):
    port = WebhookDispatch

    async def claim(
        self, *, lease: timedelta, batch: int, per_endpoint: int
    ) -> Sequence[DueDelivery]:
        call = func.tenantry_claim_webhook_deliveries(
            int(lease.total_seconds()), batch, per_endpoint
        )
        rows = await self.session.execute(select(call.table_valued(*_DUE_COLUMNS)))
        return [DueDelivery(row.tenant_id, row.endpoint_id, row.id) for row in rows]

    async def purge(self, before: datetime, *, batch: int) -> int:
        call = func.tenantry_purge_webhook_deliveries(before, batch)
        return int((await self.session.execute(select(call))).scalar_one())

"""The workers' webhook delivery: rounds of claims beside the arq jobs, in the same process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

from tenantry.application.webhooks import Delivered
from tenantry.domain.errors import Unavailable
from tenantry.domain.webhooks import DeliveryStatus
from tenantry.infrastructure.observability.metrics import WEBHOOK_ATTEMPTS

log = structlog.stdlib.get_logger("tenantry.webhooks")


class WebhookLoop:
    """Delivers due webhooks: a round at once after one that found work, otherwise one every
    ``poll`` seconds. A round that fails (the database away) is logged and tried again at the
    next poll; what it had claimed is due again when its lease ends."""

    def __init__(self, deliver: Callable[[], Awaitable[Sequence[Delivered]]], poll: float) -> None:
        self.deliver = deliver
        self.poll = poll
        self.task: asyncio.Task[None] | None = None
        self.failing = False

    async def start(self, _ctx: dict[str, Any] | None = None) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self, _ctx: dict[str, Any] | None = None) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _run(self) -> None:
        while True:
            try:
                delivered = await self.deliver()
            except Exception as error:
                if not self.failing:
                    # The database away is expected and its message says all: a traceback
                    # would only cost the loop (a console's rich one blocks it for seconds).
                    if isinstance(error, Unavailable):
                        log.error("webhook delivery round failed", error=str(error))
                    else:
                        log.exception("webhook delivery round failed", error=type(error).__name__)
                self.failing = True
                delivered = []
            else:
                if self.failing:
                    log.info("webhook delivery works again")
                self.failing = False
            for each in delivered:
                _log(each)
            if not delivered:
                await asyncio.sleep(self.poll)


# An attempt's outcome by the delivery's status after it.
_OUTCOMES = {
    DeliveryStatus.SUCCEEDED: "delivered",
    DeliveryStatus.PENDING: "retrying",
    DeliveryStatus.FAILED: "failed",
}


def _log(delivered: Delivered) -> None:
    claimed, outcome = delivered.claimed, delivered.outcome
    fields: dict[str, Any] = {
        "tenant_id": str(claimed.tenant_id),
        "webhook_id": str(claimed.endpoint_id),
        "delivery_id": str(claimed.id),
        "event_type": delivered.event_type,
    }
    if delivered.status is None or outcome is None:
        log.info("webhook delivery skipped", **fields)
        return
    WEBHOOK_ATTEMPTS.labels(_OUTCOMES[delivered.status]).inc()
    fields |= {
        "status": delivered.status.value,
        "response_status": outcome.status,
        "duration_ms": outcome.duration_ms,
    }
    if outcome.succeeded:
        log.info("webhook delivered", **fields)
    else:
        log.warning("webhook delivery attempt failed", error=outcome.error, **fields)

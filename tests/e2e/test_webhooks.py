"""A `tenantry worker` killed (SIGKILL) while its delivery waits for the receiver's answer: the
delivery is not lost; another worker sends it again when the lease ends, same webhook-id."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable
from pathlib import Path

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from tenantry import bootstrap
from tenantry.config import Settings

from ..integration.identity import owner_session
from ..integration.test_tasks import task_settings
from ..integration.test_webhooks import HOOKS, deliveries_of, register
from ..webhook_receiver import Receiver
from .test_worker_kill import start_worker

pytestmark = pytest.mark.timeout(180)
# The request waits unanswered for less than the timeout; the lease outlasts both.
TIMEOUT_S, LEASE_S = 10, 12


def tenantry_worker(
    settings: Settings, project_root: Path, started: list[asyncio.subprocess.Process]
) -> Awaitable[asyncio.subprocess.Process]:
    env = {
        "TENANTRY_WEBHOOK_TIMEOUT_SECONDS": str(TIMEOUT_S),
        "TENANTRY_WEBHOOK_LEASE_SECONDS": str(LEASE_S),
        "TENANTRY_WEBHOOK_POLL_SECONDS": "0.1",
        "TENANTRY_WORKER_METRICS_PORT": "0",
    }
    return start_worker(settings, project_root, started, module=("tenantry", "worker"), env=env)


async def test_a_delivery_cut_short_by_sigkill_is_sent_again(
    settings: Settings,
    clean_state: None,
    project_root: Path,
    workers: list[asyncio.subprocess.Process],
) -> None:
    configured = msgspec.structs.replace(task_settings(settings), webhook_poll_seconds=0.1)
    receiver = Receiver()
    async with (
        receiver.serving(),
        AsyncTestClient(app=bootstrap.create_app(configured)) as client,
    ):
        owner = await owner_session(client, "acme")
        hook = await register(client, owner, receiver, "/acme", "project.created")
        receiver.open.clear()
        await client.post("/api/v1/projects", headers=owner, json={"name": "A"})

        first = await tenantry_worker(configured, project_root, workers)
        await receiver.wait_for(1, seconds=60)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        receiver.open.set()

        await tenantry_worker(configured, project_root, workers)
        (delivery,) = await deliveries_of(client, owner, hook["id"], "succeeded")
        assert [r.webhook_id for r in receiver.received] == [str(delivery["event_id"])] * 2
        assert all(r.verified for r in receiver.received)
        # The killed worker's attempt left no record; the one after it did.
        assert [a["succeeded"] for a in delivery["attempts"]] == [True]
        listing = await client.get(f"{HOOKS}/{hook['id']}/deliveries", headers=owner)
        assert listing.json()["total"] == 1

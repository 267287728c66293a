"""A `tenantry worker` killed (SIGKILL) while its delivery waits for the receiver's answer: the
delivery is not lost; another worker sends it again when the lease ends, same webhook-id."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
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
from .test_worker_kill import worker_env

pytestmark = pytest.mark.timeout(180)
# The request waits unanswered for less than the timeout; the lease outlasts both.
TIMEOUT_S, LEASE_S = 10, 12


@pytest.fixture
async def workers() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    started: list[asyncio.subprocess.Process] = []
    yield started
    for process in started:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def tenantry_worker(
    settings: Settings, project_root: Path, started: list[asyncio.subprocess.Process]
) -> asyncio.subprocess.Process:
    env = worker_env(settings) | {
        "TENANTRY_WEBHOOK_TIMEOUT_SECONDS": str(TIMEOUT_S),
        "TENANTRY_WEBHOOK_LEASE_SECONDS": str(LEASE_S),
        "TENANTRY_WEBHOOK_POLL_SECONDS": "0.1",
        "TENANTRY_WORKER_METRICS_PORT": "0",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tenantry", "worker",
        cwd=project_root,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    started.append(process)
    return process


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

"""Fair dispatch across tenants, with two real `tenantry worker` processes: one tenant's
thousand pending tasks do not hold back another tenant's five."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from tenantry import bootstrap
from tenantry.config import Settings

from ..integration.identity import owner_session
from ..integration.test_tasks import task_settings
from .test_worker_kill import worker_env

pytestmark = pytest.mark.timeout(240)

A_TASKS, B_TASKS = 1000, 5
# Two workers of 5 slots: at most 10 tasks are due in the queue at once (the window). When
# the workers start, A's first 10 are due and B's 5 wait in B's backlog; from then on the
# dispatch alternates A and B, so B's last task is done after at most about 10 + 5 of A's.
# The bound leaves room for two workers taking turns unevenly on a busy machine.
BOUND = 300


@pytest.fixture
async def processes() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    started: list[asyncio.subprocess.Process] = []
    yield started
    for process in started:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), timeout=30)


async def test_a_tenants_backlog_does_not_hold_back_another_tenants_tasks(
    settings: Settings,
    clean_state: None,
    project_root: Path,
    database_owner: asyncpg.Connection,
    processes: list[asyncio.subprocess.Process],
) -> None:
    configured = msgspec.structs.replace(
        task_settings(settings), task_dispatch_window=10, worker_concurrency=5
    )
    async with AsyncTestClient(app=bootstrap.create_app(configured)) as client:
        a = await owner_session(client, "acme")
        b = await owner_session(client, "globex")
        for _ in range(A_TASKS // 50):
            answers = await asyncio.gather(
                *(client.post("/api/v1/tasks", headers=a, json={"type": "noop"}) for _ in range(50))
            )
            assert {answer.status_code for answer in answers} == {202}
        for _ in range(B_TASKS):
            answer = await client.post("/api/v1/tasks", headers=b, json={"type": "noop"})
            assert answer.status_code == 202, answer.text
        b_tenant = (await client.get("/api/v1/auth/me", headers=b)).json()["tenant_id"]

    env = worker_env(configured) | {
        "TENANTRY_WORKER_CONCURRENCY": "5",
        "TENANTRY_TASK_DISPATCH_WINDOW": "10",
    }
    for _ in range(2):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tenantry", "worker",
            cwd=project_root, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        processes.append(process)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        done = await database_owner.fetchval(
            "select count(*) from tasks where tenant_id = $1 and status = 'completed'",
            b_tenant,
        )
        if done == B_TASKS:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("B's tasks did not all complete")
    ahead = await database_owner.fetchval(
        "select count(*) from tasks where tenant_id <> $1 and status = 'completed' "
        "and completed_at <= (select max(completed_at) from tasks where tenant_id = $1)",
        b_tenant,
    )
    print(f"tasks of A completed before B's last: {ahead} (bound {BOUND})")
    assert ahead < BOUND

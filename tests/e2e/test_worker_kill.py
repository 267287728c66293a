"""A worker killed mid-task (SIGKILL): another worker finishes the task; nothing stays in
processing."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from tenantry.config import Settings

from ..conftest import Client
from ..integration.identity import owner_session
from ..integration.test_tasks import app_with, submit, task_settings, wait_for

pytestmark = pytest.mark.timeout(180)


def worker_env(settings: Settings) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TENANTRY_")}
    return env | {
        "TENANTRY_ENV": "test",
        "TENANTRY_DATABASE_URL": settings.required("database_url"),
        "TENANTRY_REDIS_URL": settings.required("redis_url"),
        "TENANTRY_KEYRING_PATH": settings.required("keyring_path"),
        "TENANTRY_FILES_DIR": settings.required("files_dir"),
        "TENANTRY_TASK_QUEUE_NAME": settings.task_queue_name,
        "TENANTRY_TASK_TIMEOUT_SECONDS": str(settings.task_timeout_seconds),
        "TENANTRY_TASK_HEARTBEAT_SECONDS": str(settings.task_heartbeat_seconds),
        "TENANTRY_LOG_JSON": "true",
    }


async def start_worker(
    settings: Settings,
    project_root: Path,
    started: list[asyncio.subprocess.Process],
    *,
    module: tuple[str, ...] = ("tests.e2e.worker_process",),
    env: dict[str, str] | None = None,
) -> asyncio.subprocess.Process:
    """A worker process (the test handlers' by default; ``("tenantry", "worker")`` is the
    product's own command) with ``settings`` and ``env`` besides."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *module,
        cwd=project_root,
        env=worker_env(settings) | (env or {}),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    started.append(process)
    return process


async def test_a_killed_workers_task_is_finished_by_another(
    settings: Settings,
    clean_state: None,
    project_root: Path,
    workers: list[asyncio.subprocess.Process],
) -> None:
    fast = msgspec.structs.replace(
        task_settings(settings), task_timeout_seconds=5, task_heartbeat_seconds=0.5
    )
    async with AsyncTestClient(app=app_with(fast, with_worker=False)) as client:
        owner = await owner_session(client, "acme")
        task = await submit(client, owner, "test.slow", config={"steps": 40})
        first = await start_worker(fast, project_root, workers)
        running = await wait_until(
            client, owner, task["id"], lambda t: t["status"] == "processing" and t["progress"] > 0
        )
        assert running["status"] == "processing"
        first.send_signal(signal.SIGKILL)
        await first.wait()

        await start_worker(fast, project_root, workers)
        done = await wait_for(client, owner, task["id"], "completed", "failed")
        assert done["status"] == "completed", done
        logs = (await client.get(f"/api/v1/tasks/{task['id']}/logs", headers=owner)).json()
        assert logs[-1]["success"] is True
        assert logs[-1]["attempt"] >= 2


async def wait_until(
    client: Client, headers: dict[str, str], task_id: str, condition: Any
) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        task: dict[str, Any] = (
            await client.get(f"/api/v1/tasks/{task_id}", headers=headers)
        ).json()
        if condition(task):
            return task
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} never got there: {task}")

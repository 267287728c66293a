"""`tenantry serve` and `tenantry worker`, as operators run them, on the cluster's coordinator:
two tenants sign up, one's project and task are its own, its file goes up and comes back, and
the worker runs the task to its end."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import httpx
import pytest

from tenantry.config import Settings
from tenantry.infrastructure.embedded import free_port
from tests.e2e.test_worker_kill import worker_env
from tests.integration.identity import owner_session
from tests.integration.test_tasks import submit, wait_for

pytestmark = pytest.mark.timeout(180)


async def start(
    started: list[asyncio.subprocess.Process], env: dict[str, str], log: Path, *args: str
) -> None:
    command = [sys.executable, "-m", "tenantry", *args]
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=log.parent, env=env, stdout=output, stderr=asyncio.subprocess.STDOUT
        )
    started.append(process)


async def until_ready(client: httpx.AsyncClient, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if (await client.get("/ready")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    output = await asyncio.to_thread(log.read_text)
    raise AssertionError(f"tenantry serve never became ready:\n{output[-3000:]}")


async def test_serve_and_worker_run_the_product_on_the_cluster(
    settings: Settings,
    clean_state: None,
    workers: list[asyncio.subprocess.Process],
    tmp_path: Path,
) -> None:
    port = free_port()
    env = worker_env(settings) | {
        "TENANTRY_PASSWORD_TIME_COST": "1",
        "TENANTRY_PASSWORD_MEMORY_KIB": "1024",
    }
    api_log = tmp_path / "serve.log"
    await start(workers, env, api_log, "serve", "--host=127.0.0.1", f"--port={port}")
    await start(workers, env, tmp_path / "worker.log", "worker")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        await until_ready(client, api_log)
        acme = await owner_session(client, "acme")
        globex = await owner_session(client, "globex")

        created = await client.post("/api/v1/projects", headers=acme, json={"name": "Routed"})
        assert created.status_code == 201, created.text
        project = created.json()
        found = await client.get(f"/api/v1/projects/{project['id']}", headers=acme)
        assert found.json()["name"] == "Routed"
        assert (
            await client.get(f"/api/v1/projects/{project['id']}", headers=globex)
        ).status_code == 404
        assert (await client.get("/api/v1/projects", headers=globex)).json()["total"] == 0

        upload = await client.post(
            "/api/v1/files", headers=acme, files={"file": ("notes.txt", b"on the cluster\n")}
        )
        assert upload.status_code == 201, upload.text
        content = await client.get(f"/api/v1/files/{upload.json()['id']}/content", headers=acme)
        assert content.content == b"on the cluster\n"

        task = await submit(client, acme, "noop")
        done = await wait_for(client, acme, task["id"], "completed", "failed")
        assert done["status"] == "completed", done
        assert (await client.get("/api/v1/tasks", headers=globex)).json()["total"] == 0

"""Two API processes and two workers on one PostgreSQL, one Redis and one Vault: whatever one
process does, the other honours."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tenantry.config import Settings
from tenantry.infrastructure import cpus
from tenantry.infrastructure.embedded import free_port

from ..integration.identity import PASSWORD, bearer, create_tenant
from ..integration.test_secrets import seed_database_secret
from ..integration.test_tasks import task_settings

pytestmark = pytest.mark.timeout(240)
LOGIN_LIMIT = 4


def process_env(settings: Settings) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TENANTRY_")}
    return env | {
        "TENANTRY_ENV": "production",
        "TENANTRY_DATABASE_URL": settings.required("database_url"),
        "TENANTRY_REDIS_URL": settings.required("redis_url"),
        "TENANTRY_VAULT_ADDR": settings.required("vault_addr"),
        "TENANTRY_VAULT_TOKEN": settings.required("vault_token"),
        "TENANTRY_VAULT_DATABASE_PATH": settings.vault_database_path,
        "TENANTRY_VAULT_KEYRING_PATH": settings.vault_keyring_path,
        "TENANTRY_FILES_DIR": settings.required("files_dir"),
        "TENANTRY_TASK_QUEUE_NAME": settings.task_queue_name,
        "TENANTRY_WORKER_CONCURRENCY": "2",
        "TENANTRY_LOGIN_ATTEMPTS_PER_ACCOUNT": str(LOGIN_LIMIT),
        "TENANTRY_PASSWORD_TIME_COST": "1",
        "TENANTRY_PASSWORD_MEMORY_KIB": "1024",
        "TENANTRY_LOG_JSON": "true",
    }


class Processes:
    def __init__(self, settings: Settings, directory: Path) -> None:
        self.settings = settings
        self.directory = directory
        self.started: list[asyncio.subprocess.Process] = []

    async def start(self, name: str, *args: str, **env: str) -> Path:
        log = self.directory / f"{name}.log"
        with log.open("wb") as output:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tenantry", *args,
                cwd=self.directory,
                env=process_env(self.settings) | env,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        self.started.append(process)
        return log

    async def run(self, *args: str) -> None:
        """A one-shot command, which must succeed."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tenantry", *args,
            cwd=self.directory,
            env=process_env(self.settings),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await process.communicate()
        assert process.returncode == 0, output.decode()

    async def api(self, name: str, **env: str) -> httpx.AsyncClient:
        port = free_port()
        log = await self.start(name, "serve", "--port", str(port), **env)
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if (await client.get("/ready")).status_code == 200:
                    return client
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
        raise AssertionError(f"{name} did not become ready:\n{log.read_text()[-3000:]}")

    async def stop(self) -> None:
        for process in self.started:
            if process.returncode is None:
                process.terminate()
        for process in self.started:
            try:
                await asyncio.wait_for(process.wait(), timeout=20)
            except TimeoutError:
                process.kill()
                await process.wait()


@pytest.fixture
async def processes(
    vault_settings: Settings, clean_state: None, tmp_path: Path
) -> AsyncIterator[Processes]:
    settings = task_settings(vault_settings)
    await seed_database_secret(settings)
    # Production starts only with an existing keyring: the operator's first rotation makes it.
    running = Processes(settings, tmp_path)
    await running.run("keys", "rotate")
    yield running
    await running.stop()


def cpu_list(pid: int) -> str:
    """The CPUs a process's main thread may run on, as the kernel lists them ("0-3", "1")."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^Cpus_allowed_list:\s*(\S+)$", status, re.MULTILINE)
    assert found, status
    return found.group(1)


async def login(
    client: httpx.AsyncClient, password: str = PASSWORD, *, tenant: str = "acme"
) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/login", json={"tenant": tenant, "login": "olive", "password": password}
    )


async def test_two_apis_and_two_workers_act_as_one(processes: Processes) -> None:
    async with AsyncExitStack() as stack:
        # Pinned, as where the API processes own the machine's CPUs: nothing below may change.
        a = await processes.api("api-a", TENANTRY_CPU_PINNING="true")
        stack.push_async_callback(a.aclose)
        b = await processes.api("api-b", TENANTRY_CPU_PINNING="true")
        stack.push_async_callback(b.aclose)
        if cpus.supported():
            # The two share one data directory, so they share out its CPUs: one each.
            placed = [cpu_list(process.pid) for process in processes.started]
            assert all(cpu.isdigit() for cpu in placed), placed
            assert len(set(placed)) == min(2, len(os.sched_getaffinity(0))), placed
        worker_logs = [
            await processes.start(f"worker-{n}", "worker", TENANTRY_WORKER_METRICS_PORT="0")
            for n in (1, 2)
        ]
        await create_tenant(a, "acme")

        # A login on one is a session on the other.
        tokens = (await login(a)).json()
        assert (await b.get("/api/v1/auth/me", headers=bearer(tokens))).status_code == 200

        # A refresh on one is seen as used by the other: the reuse revokes the family.
        refreshed = await a.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert refreshed.status_code == 200
        reuse = await b.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert reuse.status_code == 401
        after_theft = await a.post(
            "/api/v1/auth/refresh", json={"refresh_token": refreshed.json()["refresh_token"]}
        )
        assert after_theft.status_code == 401

        # A rotation on one is honoured by both, and old tokens keep working on both.
        owner = (await login(b)).json()
        root = await superuser(processes, a)
        rotated = await a.post("/api/v1/admin/keys/rotate", headers=root)
        assert rotated.status_code == 201, rotated.text
        new_kid = rotated.json()["current"]
        fresh = (await login(a)).json()
        assert jwt.get_unverified_header(fresh["access_token"])["kid"] == new_kid
        for client in (a, b):
            for session in (owner, fresh):
                me = await client.get("/api/v1/auth/me", headers=bearer(session))
                assert me.status_code == 200, me.text

        # Jobs submitted to either API spread over both workers.
        submitted = []
        for n in range(24):
            api = (a, b)[n % 2]
            response = await api.post("/api/v1/tasks", headers=bearer(fresh), json={"type": "noop"})
            assert response.status_code == 202, response.text
            submitted.append(response.json()["id"])
        await wait_all_completed(a, bearer(fresh), submitted)
        ran = [tasks_run(log) for log in worker_logs]
        assert set().union(*ran) == set(submitted)
        assert all(ran), f"one worker ran nothing: {[len(r) for r in ran]}"

        # A rate limit counts across both: attempts split over A and B hit one counter.
        await create_tenant(b, "globex")
        for client in (a, b, a, b):
            assert (await login(client, "wrong password 77", tenant="globex")).status_code == 401
        blocked = await login(b, tenant="globex")
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) > 0
        assert (await login(a, tenant="globex")).status_code == 429


async def superuser(processes: Processes, api: httpx.AsyncClient) -> dict[str, str]:
    await processes.run(
        "create-superuser", "--username", "root", "--email", "root@platform.example",
        "--password", "platform Secret 99",
    )  # fmt: skip
    response = await api.post(
        "/api/v1/auth/login",
        json={"tenant": "platform", "login": "root", "password": "platform Secret 99"},
    )
    assert response.status_code == 200, response.text
    return bearer(response.json())


async def wait_all_completed(
    api: httpx.AsyncClient, headers: dict[str, str], task_ids: list[str]
) -> None:
    deadline = time.monotonic() + 60
    pending = set(task_ids)
    while pending and time.monotonic() < deadline:
        for task_id in list(pending):
            task = (await api.get(f"/api/v1/tasks/{task_id}", headers=headers)).json()
            if task["status"] == "completed":
                pending.discard(task_id)
        await asyncio.sleep(0.2)
    assert not pending, f"{len(pending)} tasks did not finish"


def tasks_run(log: Path) -> set[str]:
    ran = set()
    for line in log.read_text().splitlines():
        try:
            entry: dict[str, Any] = json.loads(line)
        except ValueError:
            continue
        if entry.get("message") == "task attempt done":
            ran.add(entry["task_id"])
    return ran

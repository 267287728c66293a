"""`tenantry dev` end to end: embedded engines, readiness, persistence and a clean stop."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psutil
import pytest

from tenantry.infrastructure.embedded import free_port

pytestmark = pytest.mark.timeout(180)


class DevServer:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, *args: str) -> float:
        env = {key: value for key, value in os.environ.items() if not key.startswith("TENANTRY_")}
        env |= {"TENANTRY_DATA_DIR": str(self.data_dir), "TENANTRY_PORT": str(self.port)}
        started = time.monotonic()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tenantry", "dev", *args,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await self.ready(started)
        return time.monotonic() - started

    async def ready(self, since: float) -> None:
        assert self.process is not None
        async with httpx.AsyncClient(base_url=self.base) as client:
            while time.monotonic() - since < 120:
                assert self.process.returncode is None, "tenantry dev exited early"
                try:
                    if (await client.get("/ready")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError("tenantry dev never became ready")

    def api_processes(self) -> set[int]:
        """The processes uvicorn's reloader started to serve the API."""
        assert self.process is not None
        found = set()
        for child in psutil.Process(self.process.pid).children():
            try:
                if "spawn_main" in " ".join(child.cmdline()):
                    found.add(child.pid)
            except psutil.Error:
                pass  # an API process that just ended (a zombie until reaped)
        return found

    async def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        return await asyncio.wait_for(self.process.wait(), timeout=60)

    def engine_processes(self) -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(process.info["cmdline"] or [])
            if str(self.data_dir) in cmdline and process.pid != os.getpid():
                found.append(process)
        return found


@pytest.fixture
async def dev(tmp_path: Path) -> AsyncIterator[DevServer]:
    server = DevServer(tmp_path / "data")
    yield server
    if server.process is not None and server.process.returncode is None:
        server.process.kill()
        await server.process.wait()
    for process in server.engine_processes():
        process.kill()


async def test_dev_runs_persists_and_stops_cleanly(dev: DevServer) -> None:
    await dev.start()
    async with httpx.AsyncClient(base_url=dev.base) as client:
        assert (await client.get("/health")).status_code == 200
        created = await client.post(
            "/api/v1/tenants",
            json={
                "name": "Acme",
                "slug": "acme",
                "owner": {
                    "username": "olive",
                    "email": "olive@acme.example",
                    "password": "correct horse battery 9",
                },
            },
        )
        assert created.status_code == 201
        # The in-process worker runs tasks end to end.
        login = await client.post(
            "/api/v1/auth/login",
            json={"tenant": "acme", "login": "olive", "password": "correct horse battery 9"},
        )
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        task = (await client.post("/api/v1/tasks", headers=headers, json={"type": "noop"})).json()
        deadline = time.monotonic() + 30
        while (await client.get(f"/api/v1/tasks/{task['id']}", headers=headers)).json()[
            "status"
        ] != "completed":
            assert time.monotonic() < deadline, "the dev worker never ran the task"
            await asyncio.sleep(0.2)
    assert await dev.stop() == 0
    assert dev.engine_processes() == []

    await dev.start()
    async with httpx.AsyncClient(base_url=dev.base) as client:
        again = await client.post(
            "/api/v1/tenants",
            json={
                "name": "Acme",
                "slug": "acme",
                "owner": {
                    "username": "olive",
                    "email": "olive@acme.example",
                    "password": "correct horse battery 9",
                },
            },
        )
        assert again.status_code == 409, "the tenant from the first run is still there"
    assert await dev.stop() == 0
    assert dev.engine_processes() == []


async def test_killing_postgres_turns_ready_to_503_and_health_stays_up(dev: DevServer) -> None:
    await dev.start()
    postmaster = int((dev.data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    os.kill(postmaster, signal.SIGKILL)
    async with httpx.AsyncClient(base_url=dev.base, timeout=5) as client:
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"]["status"] == "error"
        assert ready.json()["checks"]["redis"]["status"] == "ok"
        assert (await client.get("/health")).status_code == 200
    assert await dev.stop() == 0
    for process in dev.engine_processes():
        # Postgres backends orphaned by the SIGKILL exit on their own once the postmaster is gone.
        process.wait(timeout=10)


async def test_reload_restarts_the_api_on_a_change_and_keeps_the_engines(
    dev: DevServer, tmp_path: Path
) -> None:
    watched = tmp_path / "myproduct"
    watched.mkdir()
    (watched / "feature.py").write_text("ANSWER = 1\n")
    await dev.start("--reload", "--reload-dir", str(watched))
    api, engines = dev.api_processes(), {p.pid for p in dev.engine_processes()}
    assert len(api) == 1
    tenant = {
        "name": "Acme",
        "slug": "acme",
        "owner": {
            "username": "olive",
            "email": "olive@acme.example",
            "password": "correct horse battery 9",
        },
    }
    async with httpx.AsyncClient(base_url=dev.base) as client:
        assert (await client.post("/api/v1/tenants", json=tenant)).status_code == 201

    changed = time.monotonic()
    (watched / "feature.py").write_text("ANSWER = 2\n")
    # No new API process at all fails the test by its timeout (pytest-timeout).
    while True:
        restarted = dev.api_processes()
        if restarted not in (api, set()):
            break
        await asyncio.sleep(0.2)
    await dev.ready(changed)
    # A new API process, the same engines and their data.
    assert {p.pid for p in dev.engine_processes()} == engines
    async with httpx.AsyncClient(base_url=dev.base) as client:
        assert (await client.post("/api/v1/tenants", json=tenant)).status_code == 409
    assert await dev.stop() == 0
    assert dev.engine_processes() == []

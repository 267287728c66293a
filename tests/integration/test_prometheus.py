"""A real Prometheus scrapes a running API (`tenantry serve`) and a worker's own metrics port
(`tenantry worker`), and its query API answers with Tenantry's series."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tenantry.config import Settings
from tenantry.infrastructure.embedded import free_port

from .identity import owner_session
from .test_metrics import product_env, read, running, wait_healthy

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="the prometheus binary is not installed (Debian: apt-get install prometheus)",
    ),
    pytest.mark.timeout(180),
]


def prometheus_config(api_port: int, worker_port: int) -> str:
    return f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: api
    static_configs: [{{targets: ["127.0.0.1:{api_port}"]}}]
  - job_name: worker
    static_configs: [{{targets: ["127.0.0.1:{worker_port}"]}}]
"""


@asynccontextmanager
async def prometheus(
    tmp_path: Path, api_port: int, worker_port: int
) -> AsyncIterator[httpx.AsyncClient]:
    """Prometheus on a free loopback port with its storage under ``tmp_path``."""
    assert PROMETHEUS is not None
    config, port, log = tmp_path / "prometheus.yml", free_port(), tmp_path / "prometheus.log"
    config.write_text(prometheus_config(api_port, worker_port))
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                deadline = time.monotonic() + 60
                while True:
                    assert process.returncode is None, read(log)
                    assert time.monotonic() < deadline, "Prometheus not ready: " + read(log)
                    try:
                        if (await client.get("/-/ready")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.2)
                yield client
        finally:
            if process.returncode is None:
                process.terminate()
                await process.wait()


async def query(client: httpx.AsyncClient, promql: str) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/query", params={"query": promql})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def eventually(client: httpx.AsyncClient, promql: str, minimum: float) -> list[Any]:
    """The query's result once some series of it reaches ``minimum`` (scrapes are every 1 s)."""
    deadline = time.monotonic() + 45
    while True:
        result = await query(client, promql)
        if any(float(series["value"][1]) >= minimum for series in result):
            return result
        assert time.monotonic() < deadline, f"{promql}: {result}"
        await asyncio.sleep(0.5)


async def test_prometheus_scrapes_the_api_and_a_worker(
    settings: Settings, clean_state: None, tmp_path: Path
) -> None:
    api_port, worker_port = free_port(), free_port()
    env = product_env(settings, tmp_path / "data", api_port)
    worker_env = env | {"TENANTRY_WORKER_METRICS_PORT": str(worker_port)}
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    async with (
        running(["serve"], env, tmp_path, api_log) as api,
        running(["worker"], worker_env, tmp_path, worker_log) as worker,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as client,
        prometheus(tmp_path, api_port, worker_port) as prom,
    ):
        await wait_healthy(client, api, api_log)
        owner = await owner_session(client, "acme")
        submitted = await client.post("/api/v1/tasks", headers=owner, json={"type": "noop"})
        assert submitted.status_code == 202, submitted.text
        task_id = submitted.json()["id"]
        deadline = time.monotonic() + 60
        while (await client.get(f"/api/v1/tasks/{task_id}", headers=owner)).json()[
            "status"
        ] != "completed":
            assert worker.returncode is None, read(worker_log)
            assert time.monotonic() < deadline, read(worker_log)
            await asyncio.sleep(0.2)

        # Both targets answer (the first scrapes may have come before they listened).
        await eventually(prom, 'count(up{job=~"api|worker"} == 1)', 2)
        submits = await eventually(
            prom,
            'tenantry_http_requests_total{job="api",method="POST",route="/api/v1/tasks"}',
            1,
        )
        assert {s["metric"]["status"] for s in submits} == {"202"}
        await eventually(
            prom, 'tenantry_http_request_duration_seconds_count{route="/api/v1/tasks/{task_id}"}', 1
        )
        await eventually(prom, 'tenantry_db_pool_size{job="api"}', settings.db_pool_size)
        for series in ("started", "succeeded"):
            await eventually(
                prom, f'tenantry_jobs_{series}_total{{job="worker",task_type="noop"}}', 1
            )
        await eventually(prom, 'tenantry_job_duration_seconds_count{task_type="noop"}', 1)
        depth = await eventually(prom, 'tenantry_queue_depth{job="worker"}', 0)
        assert {s["metric"]["state"] for s in depth} == {"pending", "in_progress"}
        await eventually(
            prom, 'tenantry_worker_concurrency_limit{job="worker"}', settings.worker_concurrency
        )

"""Prometheus metrics over real HTTP: the API served by uvicorn on a loopback port (in this
event loop, so the test can hold requests open and connections out of the app's pool), a real
arq worker on real Redis, and `tenantry serve --workers 2` sharing its series across processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import msgspec
import pytest
import uvicorn
from litestar import Litestar
from prometheus_client import REGISTRY
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from tenantry import bootstrap
from tenantry.application.tasks import Registry
from tenantry.config import Settings
from tenantry.infrastructure.embedded import free_port
from tenantry.infrastructure.observability.metrics import (
    MULTIPROC_DIR_ENV,
    exposition,
    forget_dead_processes,
    queue_depth,
)

from ..conftest import uvicorn_serving
from .identity import owner_session
from .test_tasks import TEST_HANDLERS, submit, task_settings, wait_for

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]
INFO = {"method": "GET", "route": "/api/v1/info"}


def parse(text: str) -> Series:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> Series:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return parse(response.text)


def tenantry_series(series: Series) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    return {key for key in series if key[0].startswith("tenantry_")}


def built(settings: Settings, *, with_worker: bool = False) -> tuple[Litestar, bootstrap.Container]:
    container = bootstrap.Container(settings)
    container.registry = Registry(TEST_HANDLERS)
    app = bootstrap.create_app(settings, container=container, with_worker=with_worker)
    return app, container


@asynccontextmanager
async def served(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """The app behind a real uvicorn on a free loopback port, in this event loop."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="on",
        # Longer than any pause of a busy test machine: a keep-alive connection the server
        # closed while the client still pooled it would fail the next request with ReadError.
        timeout_keep_alive=120,
    )
    async with (
        uvicorn_serving(config),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        yield client


@pytest.fixture
async def api(settings: Settings, clean_state: None) -> AsyncIterator[httpx.AsyncClient]:
    async with served(built(settings)[0]) as client:
        yield client


async def test_requests_are_counted_by_route_template_and_status(
    api: httpx.AsyncClient,
) -> None:
    owner = await owner_session(api, "acme")
    before = await scrape(api)
    missing = uuid.uuid4()
    for _ in range(3):
        assert (await api.get("/api/v1/info")).status_code == 200
    assert (await api.get(f"/api/v1/projects/{missing}", headers=owner)).status_code == 404
    assert (await api.get(f"/api/v1/projects/{missing}")).status_code == 401
    assert (await api.get(f"/no/such/{missing}")).status_code == 404
    assert (await api.delete("/health")).status_code == 405
    after = await scrape(api)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    project = {"method": "GET", "route": "/api/v1/projects/{project_id}"}
    assert delta("tenantry_http_requests_total", **INFO, status="200") == 3
    assert delta("tenantry_http_request_duration_seconds_count", **INFO) == 3
    assert delta("tenantry_http_requests_total", **project, status="404") == 1
    assert delta("tenantry_http_requests_total", **project, status="401") == 1
    assert delta("tenantry_http_request_duration_seconds_count", **project) == 2
    unmatched = {"route": "<unmatched>", "status": "404"}
    assert delta("tenantry_http_requests_total", method="GET", **unmatched) == 1
    assert delta("tenantry_http_requests_total", method="DELETE", route="<unmatched>", status="405")
    assert delta("tenantry_http_errors_total", status_class="4xx") == 4
    assert delta("tenantry_http_errors_total", status_class="5xx") == 0
    # Durations land in the histogram's buckets, 5 ms to 10 s and +Inf.
    buckets = {
        dict(labels)["le"]
        for name, labels in after
        if name == "tenantry_http_request_duration_seconds_bucket"
        and dict(labels)["route"] == "/api/v1/info"
    }
    assert {"0.005", "0.1", "10.0", "+Inf"} <= buckets
    # Raw paths never become labels.
    labels = {v for _, ls in after for _, v in ls}
    assert not any(str(missing) in label for label in labels)


async def test_metrics_is_public_unlisted_and_not_counted(api: httpx.AsyncClient) -> None:
    response = await api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert response.headers["cache-control"] == "no-store"
    for _ in range(3):
        series = await scrape(api)
    assert not any(dict(labels).get("route") == "/metrics" for _, labels in series)
    paths = (await api.get("/docs/openapi.json")).json()["paths"]
    assert "/metrics" not in paths


async def test_in_progress_counts_open_requests(api: httpx.AsyncClient) -> None:
    owner = await owner_session(api, "acme")
    task = await submit(api, owner, "test.noop")
    idle = value(await scrape(api), "tenantry_http_requests_in_progress", method="GET")
    # No worker runs: the task stays pending and its event stream stays open.
    async with api.stream("GET", f"/api/v1/tasks/{task['id']}/events", headers=owner) as events:
        lines = events.aiter_lines()
        async for line in lines:
            if line.startswith("data:"):
                break
        busy = value(await scrape(api), "tenantry_http_requests_in_progress", method="GET")
        assert busy == idle + 1
        cancelled = await api.post(f"/api/v1/tasks/{task['id']}/cancel", headers=owner)
        assert cancelled.status_code == 202
        async for _ in lines:
            pass  # the stream ends with the task
    deadline = time.monotonic() + 10
    while value(await scrape(api), "tenantry_http_requests_in_progress", method="GET") != idle:
        assert time.monotonic() < deadline, "the finished stream is still in progress"
        await asyncio.sleep(0.05)


async def test_pool_gauges_are_read_at_scrape_time(settings: Settings, clean_state: None) -> None:
    app, container = built(settings)
    async with served(app) as client:
        await client.get("/ready")  # the engine exists once a request used it
        series = await scrape(client)
        assert value(series, "tenantry_db_pool_size") == settings.db_pool_size
        assert value(series, "tenantry_db_pool_in_use") == 0
        engine = container.alchemy.get_engine()
        async with engine.connect(), engine.connect():
            assert value(await scrape(client), "tenantry_db_pool_in_use") == 2
        assert value(await scrape(client), "tenantry_db_pool_in_use") == 0


async def test_worker_series_count_real_tasks(settings: Settings, clean_state: None) -> None:
    # The in-process worker of `tenantry dev`: its series are on the API's /metrics.
    app, _ = built(task_settings(settings), with_worker=True)
    async with served(app) as client:
        owner = await owner_session(client, "acme")
        before = await scrape(client)
        noop = await submit(client, owner, "test.noop")
        flaky = await submit(client, owner, "test.flaky")
        boom = await submit(client, owner, "test.boom")
        await wait_for(client, owner, noop["id"], "completed")
        await wait_for(client, owner, flaky["id"], "failed")
        await wait_for(client, owner, boom["id"], "failed")
        after = await scrape(client)

    def delta(name: str, task_type: str) -> float:
        return value(after, name, task_type=task_type) - value(before, name, task_type=task_type)

    assert delta("tenantry_jobs_started_total", "test.noop") == 1
    assert delta("tenantry_jobs_succeeded_total", "test.noop") == 1
    assert delta("tenantry_job_duration_seconds_count", "test.noop") == 1
    # Three attempts (task_settings): two retried, the last one failed for good.
    assert delta("tenantry_jobs_started_total", "test.flaky") == 3
    assert delta("tenantry_jobs_retried_total", "test.flaky") == 2
    assert delta("tenantry_jobs_failed_total", "test.flaky") == 1
    assert delta("tenantry_job_duration_seconds_count", "test.flaky") == 3
    assert delta("tenantry_jobs_failed_total", "test.boom") == 1
    assert delta("tenantry_jobs_retried_total", "test.boom") == 0
    assert value(after, "tenantry_worker_concurrency_limit") == settings.worker_concurrency


async def test_queue_depth_and_concurrency_follow_the_queue(
    settings: Settings, clean_state: None, redis_url: str
) -> None:
    one_at_a_time = msgspec.structs.replace(task_settings(settings), worker_concurrency=1)
    queue = one_at_a_time.task_queue_name
    redis = Redis.from_url(redis_url)
    app, _ = built(one_at_a_time, with_worker=True)
    try:
        async with served(app) as client:
            owner = await owner_session(client, "acme")
            slow = await submit(client, owner, "test.slow")
            await wait_for(client, owner, slow["id"], "processing")
            for _ in range(2):
                await submit(client, owner, "test.noop")
            pending, in_progress = await queue_depth(redis, queue)
            # arq's cron jobs pass through the same queue and may wait behind the slow task.
            assert in_progress == 1
            assert pending == await redis.zcard(queue) - 1 >= 2
            # The worker's gauges catch up within their refresh period.
            deadline = time.monotonic() + 15
            while True:
                series = await scrape(client)
                busy = (
                    value(series, "tenantry_queue_depth", state="in_progress"),
                    value(series, "tenantry_queue_depth", state="pending") >= 2,
                    value(series, "tenantry_worker_concurrency_in_use"),
                    value(series, "tenantry_worker_concurrency_limit"),
                )
                if busy == (1, True, 1, 1):
                    break
                assert time.monotonic() < deadline, busy
                await asyncio.sleep(0.2)
            await client.post(f"/api/v1/tasks/{slow['id']}/cancel", headers=owner)
            await wait_for(client, owner, slow["id"], "cancelled")
            deadline = time.monotonic() + 15
            while await queue_depth(redis, queue) != (0, 0):
                assert time.monotonic() < deadline, await queue_depth(redis, queue)
                await asyncio.sleep(0.1)
    finally:
        await redis.aclose()


async def test_queue_depth_of_a_queue_nobody_works(
    api: httpx.AsyncClient, settings: Settings, redis_url: str
) -> None:
    redis = Redis.from_url(redis_url)
    try:
        assert await queue_depth(redis, settings.task_queue_name) == (0, 0)
        owner = await owner_session(api, "acme")
        for _ in range(3):
            await submit(api, owner, "test.noop")
        # Another queue's running job is not this queue's.
        await redis.set("arq:in-progress:not-ours", b"1")
        assert await queue_depth(redis, settings.task_queue_name) == (3, 0)
    finally:
        await redis.aclose()


async def test_metrics_can_be_switched_off(settings: Settings, clean_state: None) -> None:
    app, _ = built(msgspec.structs.replace(settings, metrics_enabled=False))
    counted = {**INFO, "status": "200"}
    before = REGISTRY.get_sample_value("tenantry_http_requests_total", counted)
    async with served(app) as client:
        assert (await client.get("/metrics")).status_code == 404
        assert (await client.get("/api/v1/info")).status_code == 200
    assert REGISTRY.get_sample_value("tenantry_http_requests_total", counted) == before


async def test_many_requests_add_no_series(api: httpx.AsyncClient) -> None:
    """What a scrape costs grows with its series; ids in paths and unknown paths add none."""
    owner = await owner_session(api, "acme")

    async def burst(rounds: int) -> None:
        for _ in range(rounds):
            responses = await asyncio.gather(
                *(api.get(f"/api/v1/projects/{uuid.uuid4()}", headers=owner) for _ in range(10)),
                *(api.get(f"/nothing/{uuid.uuid4()}") for _ in range(10)),
                *(api.get("/api/v1/info") for _ in range(10)),
            )
            assert sorted({r.status_code for r in responses}) == [200, 404]

    await burst(1)
    first = tenantry_series(await scrape(api))
    await burst(10)  # 300 requests, 200 of them with paths never seen before
    assert tenantry_series(await scrape(api)) == first


def test_dead_processes_lose_their_live_gauges_not_their_counts(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead, alive = child.pid, os.getpid()
    names = [
        f"gauge_livesum_{dead}.db",
        f"gauge_livemax_{dead}.db",
        f"counter_{dead}.db",
        f"histogram_{dead}.db",
        f"gauge_livesum_{alive}.db",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    forget_dead_processes(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"counter_{dead}.db", f"histogram_{dead}.db", f"gauge_livesum_{alive}.db"]
    )


def product_env(settings: Settings, data_dir: Path, port: int) -> dict[str, str]:
    """The environment of a `tenantry` subprocess on the test's database, Redis and queue."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TENANTRY_") and key != "PROMETHEUS_MULTIPROC_DIR"
    }
    return inherited | {
        "TENANTRY_ENV": "test",
        "TENANTRY_HOST": "127.0.0.1",
        "TENANTRY_PORT": str(port),
        "TENANTRY_DATA_DIR": str(data_dir),
        "TENANTRY_DATABASE_URL": settings.required("database_url"),
        "TENANTRY_REDIS_URL": settings.required("redis_url"),
        "TENANTRY_KEYRING_PATH": settings.required("keyring_path"),
        "TENANTRY_FILES_DIR": settings.required("files_dir"),
        "TENANTRY_TASK_QUEUE_NAME": settings.task_queue_name,
        "TENANTRY_DB_POOL_SIZE": str(settings.db_pool_size),
        "TENANTRY_LOG_JSON": "true",
    }


@asynccontextmanager
async def running(
    arguments: list[str], env: dict[str, str], cwd: Path, log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`tenantry ARGUMENTS` as a subprocess, stopped with SIGINT (killed if it hangs)."""
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tenantry", *arguments,
            cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            yield process
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
                try:
                    await asyncio.wait_for(process.wait(), timeout=30)
                except TimeoutError:
                    process.kill()
                    await process.wait()


async def wait_healthy(
    client: httpx.AsyncClient, process: asyncio.subprocess.Process, log: Path
) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert process.returncode is None, read(log)
        assert time.monotonic() < deadline, "no /health: " + read(log)
        try:
            if (await client.get("/health")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)


def read(log: Path) -> str:
    return log.read_text(errors="replace")


def live_gauge_pids(directory: Path) -> set[int]:
    return {int(f.name.rsplit("_", 1)[1][:-3]) for f in directory.glob("gauge_livesum_*.db")}


@pytest.mark.timeout(180)
async def test_serve_with_workers_shares_one_set_of_series(
    settings: Settings, clean_state: None, tmp_path: Path
) -> None:
    port, data_dir, log = free_port(), tmp_path / "data", tmp_path / "serve.log"
    env = product_env(settings, data_dir, port)
    async with (
        running(["serve", "--workers", "2"], env, tmp_path, log) as server,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            timeout=30,
            limits=httpx.Limits(max_keepalive_connections=0),  # each request may meet either
        ) as client,
    ):
        await wait_healthy(client, server, log)
        # A fresh directory under the data dir, where both processes keep their series.
        (shared,) = data_dir.glob("prometheus-*")
        deadline = time.monotonic() + 30
        while len(live_gauge_pids(shared)) < 2:
            assert time.monotonic() < deadline, read(log)
            await asyncio.sleep(0.1)
        # Each process writes its pool figure once started, whichever one a scrape reaches.
        while value(await scrape(client), "tenantry_db_pool_size") != 2 * settings.db_pool_size:
            assert time.monotonic() < deadline, read(log)
            await asyncio.sleep(0.2)
        responses = await asyncio.gather(*(client.get("/api/v1/info") for _ in range(40)))
        assert {r.status_code for r in responses} == {200}
        for _ in range(6):
            series = await scrape(client)
            assert value(series, "tenantry_http_requests_total", **INFO, status="200") == 40
            assert value(series, "tenantry_db_pool_size") == 2 * settings.db_pool_size

        # A process dies: its live gauges go at the next scrape, its counts stay.
        victim = min(live_gauge_pids(shared))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while victim in live_gauge_pids(shared):
            assert time.monotonic() < deadline, read(log)
            series = await scrape(client)
            await asyncio.sleep(0.2)
        assert value(series, "tenantry_http_requests_total", **INFO, status="200") == 40
    assert server.returncode == 0, read(log)
    assert not shared.exists()


def test_a_scrape_skips_a_series_file_still_being_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process making its first series of a kind leaves its file empty for an instant; a
    scrape then must show the other files' series, not fail whole (prometheus_client reads the
    empty file's length and raises)."""
    written = MmapedDict(str(tmp_path / "counter_101.db"))
    key = json.dumps(["tenantry_demo_total", "tenantry_demo_total", {"k": "v"}, "A demo."])
    written.write_value(key, 3.0, 0.0)
    written.close()
    (tmp_path / "counter_102.db").touch()
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(tmp_path))
    series = parse(exposition().decode())
    assert value(series, "tenantry_demo_total", k="v") == 3.0

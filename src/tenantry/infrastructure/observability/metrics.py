"""Prometheus series of the API and the workers, and how they are exposed.

One process: the default registry. Several API processes (`tenantry serve --workers N`):
prometheus_client's multiprocess mode, chosen by ``PROMETHEUS_MULTIPROC_DIR`` being set when
this module is first imported; every process writes its values to files there and a scrape
sums them. Dashboards query these names: changing one is a breaking change.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import structlog
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from tenantry.infrastructure.jobs.queue import FairKeys

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# arq marks a job it runs with this key (its own constant, kept here to not reach into arq).
ARQ_IN_PROGRESS = "arq:in-progress:"
REFRESH_S = 5.0

log = structlog.stdlib.get_logger("tenantry.metrics")

# A `_created` sample beside every counter and histogram would double what each scrape carries.
disable_created_metrics()  # type: ignore[no-untyped-call]

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

HTTP_REQUESTS = Counter(
    "tenantry_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "tenantry_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by method and route template.",
    ["method", "route"],
    buckets=HTTP_BUCKETS,
)
HTTP_IN_PROGRESS = Gauge(
    "tenantry_http_requests_in_progress",
    "HTTP requests being answered now.",
    ["method"],
    multiprocess_mode="livesum",
)
HTTP_ERRORS = Counter(
    "tenantry_http_errors",
    "HTTP responses with a 4xx or 5xx status.",
    ["status_class"],
)
DB_POOL_IN_USE = Gauge(
    "tenantry_db_pool_in_use",
    "Database connections checked out of the pool.",
    multiprocess_mode="livesum",
)
DB_POOL_SIZE = Gauge(
    "tenantry_db_pool_size",
    "Database connections the pool keeps (overflow not included).",
    multiprocess_mode="livesum",
)

JOBS_STARTED = Counter("tenantry_jobs_started", "Task attempts started.", ["task_type"])
JOBS_SUCCEEDED = Counter("tenantry_jobs_succeeded", "Task attempts that completed.", ["task_type"])
JOBS_FAILED = Counter(
    "tenantry_jobs_failed", "Task attempts that failed the task for good.", ["task_type"]
)
JOBS_RETRIED = Counter(
    "tenantry_jobs_retried",
    "Task attempts that failed with a retryable error and will be retried.",
    ["task_type"],
)
JOBS_CANCELLED = Counter(
    "tenantry_jobs_cancelled", "Task attempts stopped by a cancellation.", ["task_type"]
)
JOB_DURATION = Histogram(
    "tenantry_job_duration_seconds",
    "Time a task's handler ran, per attempt, whatever the outcome.",
    ["task_type"],
    buckets=JOB_BUCKETS,
)
WEBHOOK_ATTEMPTS = Counter(
    "tenantry_webhook_attempts",
    "Webhook delivery attempts, by outcome: delivered, retrying (to be tried again) or failed "
    "(given up).",
    ["outcome"],
)
# Global figures read from Redis: every worker reports the same, so dashboards take max().
QUEUE_DEPTH = Gauge(
    "tenantry_queue_depth",
    "Jobs in the task queue: pending (waiting, deferred retries included) or in_progress.",
    ["state"],
    multiprocess_mode="livemax",
)
CONCURRENCY_IN_USE = Gauge(
    "tenantry_worker_concurrency_in_use",
    "Jobs this worker runs now.",
    multiprocess_mode="livesum",
)
CONCURRENCY_LIMIT = Gauge(
    "tenantry_worker_concurrency_limit",
    "Jobs this worker runs at most at once.",
    multiprocess_mode="livesum",
)


class PrometheusRequestMetrics:
    """The API's request series. Label children are looked up once and kept: the middleware
    calls this on every request, so it must cost next to nothing."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._in_progress: dict[str, Gauge] = {}
        self._answered: dict[tuple[str, str, int], tuple[Counter, Histogram, Counter | None]] = {}

    def started(self, method: str) -> None:
        gauge = self._in_progress.get(method)
        if gauge is None:
            gauge = self._in_progress[method] = HTTP_IN_PROGRESS.labels(method)
        gauge.inc()

    def finished(self, method: str, route: str, status: int, seconds: float) -> None:
        self._in_progress[method].dec()
        key = (method, route, status)
        children = self._answered.get(key)
        if children is None:
            children = self._answered[key] = (
                HTTP_REQUESTS.labels(method, route, str(status)),
                HTTP_DURATION.labels(method, route),
                HTTP_ERRORS.labels(f"{status // 100}xx") if status >= 400 else None,
            )
        count, duration, errors = children
        count.inc()
        duration.observe(seconds)
        if errors is not None:
            errors.inc()

    def scrape(self) -> tuple[bytes, str]:
        """Every series of this API (all of its processes), in Prometheus' text format."""
        observe_pool(self.engine)
        return exposition(), CONTENT_TYPE


def observe_pool(engine: AsyncEngine) -> None:
    pool = engine.sync_engine.pool
    # The queue pool asyncpg engines get; these are its counters, cheap to read.
    DB_POOL_IN_USE.set(pool.checkedout())  # type: ignore[attr-defined]
    DB_POOL_SIZE.set(pool.size())  # type: ignore[attr-defined]


class PoolWatcher:
    """In multiprocess mode a scrape reaches one process, which reads its own pool then; the
    others write theirs every few seconds so that the sum stays current."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            observe_pool(self.engine)
            await asyncio.sleep(REFRESH_S)

    async def start(self) -> None:
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        await _cancel(self.task)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_DIR_ENV) or None


def exposition() -> bytes:
    path = multiprocess_dir()
    if path is None:
        return generate_latest(REGISTRY)
    forget_dead_processes(Path(path))
    registry = CollectorRegistry()
    registry.register(SizedFiles(Path(path)))
    return generate_latest(registry)


# A series file starts with its 4-byte length of used bytes (prometheus_client's mmap layout).
_HEADER_BYTES = 8


class SizedFiles:
    """The processes' series files, as prometheus_client's MultiProcessCollector merges them,
    but only those their process has sized: a process creating its first series of a kind
    leaves the file empty for an instant, and reading it then fails the whole scrape."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Any:
        files = []
        for file in self.path.glob("*.db"):
            with contextlib.suppress(FileNotFoundError):  # a dead process's live gauge, dropped
                if file.stat().st_size >= _HEADER_BYTES:
                    files.append(str(file))
        return MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]


_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def forget_dead_processes(path: Path) -> None:
    """Drop the live gauges of API processes that have exited (crashed or restarted by the
    server), so an in-progress or pool figure does not outlive its process. Their counters and
    histograms stay: totals must not go down."""
    pids = {int(m[1]) for f in path.iterdir() if (m := _LIVE_GAUGE_FILE.match(f.name))}
    for pid in pids:
        if not _alive(pid):
            # Another process's scrape may be removing the same files.
            with contextlib.suppress(FileNotFoundError):
                mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    return True


class PrometheusTaskMetrics:
    """The job series, recorded by RunTask through the TaskMetrics port."""

    def started(self, task_type: str) -> None:
        JOBS_STARTED.labels(task_type).inc()

    def succeeded(self, task_type: str, seconds: float) -> None:
        JOBS_SUCCEEDED.labels(task_type).inc()
        JOB_DURATION.labels(task_type).observe(seconds)

    def failed(self, task_type: str, seconds: float) -> None:
        JOBS_FAILED.labels(task_type).inc()
        JOB_DURATION.labels(task_type).observe(seconds)

    def retried(self, task_type: str, seconds: float) -> None:
        JOBS_RETRIED.labels(task_type).inc()
        JOB_DURATION.labels(task_type).observe(seconds)

    def cancelled(self, task_type: str, seconds: float) -> None:
        JOBS_CANCELLED.labels(task_type).inc()
        JOB_DURATION.labels(task_type).observe(seconds)


async def queue_depth(redis: Redis, queue_name: str) -> tuple[int, int]:
    """(pending, in progress) jobs of the queue, pending including the tenants' backlogs of
    the fair dispatch. arq keeps a running job in the queue's sorted set until it ends and
    marks it with an in-progress key; those keys are found with SCAN (a few per running job
    in the whole database) and matched to this queue."""
    running = [
        key[len(ARQ_IN_PROGRESS) :]
        async for key in redis.scan_iter(match=ARQ_IN_PROGRESS + "*", count=1000)
    ]
    fair = FairKeys(queue_name, running_limit=None)
    tenants = await cast("Awaitable[list[bytes]]", redis.lrange(fair.ring, 0, -1))
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(queue_name)
        for job_id in running:
            pipe.zscore(queue_name, job_id)
        for tenant in tenants:
            pipe.llen(fair.backlog_prefix + tenant.decode())
        queued, *rest = await pipe.execute()
    scores, backlogs = rest[: len(running)], rest[len(running) :]
    in_progress = sum(score is not None for score in scores)
    return max(0, queued - in_progress) + sum(backlogs), in_progress


# The busiest tenants only (usage metering's top N): every worker reports the same figures.
USAGE_BUSIEST = Gauge(
    "tenantry_usage_busiest_tenant_requests",
    "Requests today (UTC) of the tenants with the most; only those tenants have a series.",
    ["tenant"],
    multiprocess_mode="livemax",
)


class PrometheusUsageGauges:
    """The UsageGauges port: one series per tenant among the busiest, the others removed."""

    def __init__(self) -> None:
        self.shown: set[str] = set()

    def busiest(self, tenants: list[tuple[str, int]]) -> None:
        now = {slug for slug, _ in tenants}
        for slug in self.shown - now:
            USAGE_BUSIEST.remove(slug)
        for slug, requests in tenants:
            USAGE_BUSIEST.labels(slug).set(requests)
        self.shown = now


class WorkerGauges:
    """Keeps a worker's queue and concurrency gauges current while the worker runs (refreshed
    every few seconds: the depth is read from Redis, not at each job)."""

    def __init__(
        self,
        *,
        queue_name: str,
        limit: int,
        running: Callable[[], int],
    ) -> None:
        self.queue_name = queue_name
        self.limit = limit
        self.running = running
        self.task: asyncio.Task[None] | None = None

    async def refresh(self, redis: Redis) -> None:
        CONCURRENCY_LIMIT.set(self.limit)
        CONCURRENCY_IN_USE.set(self.running())
        pending, in_progress = await queue_depth(redis, self.queue_name)
        QUEUE_DEPTH.labels("pending").set(pending)
        QUEUE_DEPTH.labels("in_progress").set(in_progress)

    async def _loop(self, redis: Redis) -> None:
        while True:
            try:
                await self.refresh(redis)
            except (RedisError, OSError) as error:
                log.warning("queue depth not read", error=type(error).__name__)
            await asyncio.sleep(REFRESH_S)

    async def start(self, ctx: dict[str, Any]) -> None:
        """arq's on_startup: ``ctx["redis"]`` is the worker's own connection pool."""
        self.task = asyncio.create_task(self._loop(ctx["redis"]))

    async def stop(self, ctx: dict[str, Any]) -> None:  # noqa: ARG002 - arq's hook signature
        await _cancel(self.task)
        CONCURRENCY_IN_USE.set(0)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def serve_worker_metrics(host: str, port: int) -> Callable[[], None] | None:
    """Serve this process's series on ``host:port`` (a thread); returns what stops it.

    A port already taken (a second worker on the host with the same setting) costs the
    metrics, not the jobs: the worker logs an error and runs on.
    """
    try:
        server, thread = start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as error:
        log.error("worker metrics not served", host=host, port=port, error=str(error))
        return None

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return stop

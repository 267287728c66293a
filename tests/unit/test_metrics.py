"""Metrics without I/O: what RunTask reports through its port, what the request middleware
records, and the Prometheus series those become."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import create_async_engine

from tenantry.application.tasks import Registry, SubmitTask, TaskContext
from tenantry.application.tasks.runner import RunTask
from tenantry.domain.tasks import TaskLimits, TaskRepository, TaskStatus
from tenantry.infrastructure.observability.metrics import (
    USAGE_BUSIEST,
    PrometheusRequestMetrics,
    PrometheusTaskMetrics,
    PrometheusUsageGauges,
)
from tenantry.presentation.metrics import UNMATCHED, RequestMetrics
from tenantry.presentation.middleware import RequestContextMiddleware

from .fakes import FakeJobQueue, World
from .test_tasks import ACTOR, Config, Scripted, runner, submitted


class RecordedTaskMetrics:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def started(self, task_type: str) -> None:
        self.events.append(("started", task_type))

    def _finished(self, outcome: str, task_type: str, seconds: float) -> None:
        assert seconds >= 0
        self.events.append((outcome, task_type))

    def succeeded(self, task_type: str, seconds: float) -> None:
        self._finished("succeeded", task_type, seconds)

    def failed(self, task_type: str, seconds: float) -> None:
        self._finished("failed", task_type, seconds)

    def retried(self, task_type: str, seconds: float) -> None:
        self._finished("retried", task_type, seconds)

    def cancelled(self, task_type: str, seconds: float) -> None:
        self._finished("cancelled", task_type, seconds)


class CancelledMidway:
    """The user cancels while it runs; it notices at its next check."""

    type = "cancelled"
    config_type = Config

    async def run(self, context: TaskContext, config: Config) -> dict[str, Any]:
        async with context.units() as uow:
            await uow.repository(TaskRepository, context.tenant_id).cancel(
                context.task.id, context.clock.now()
            )
            await uow.commit()
        await context.check_cancelled()
        return {}


def measured(world: World, metrics: RecordedTaskMetrics, attempts: int) -> RunTask:
    registry = Registry([Scripted(), CancelledMidway()])
    return runner(world, attempts, registry=registry, metrics=metrics)


async def test_every_attempt_is_started_and_ends_in_one_outcome() -> None:
    world, queue, metrics = World(), FakeJobQueue(), RecordedTaskMetrics()
    run = measured(world, metrics, attempts=2)
    done = await submitted(world, queue)
    await run(ACTOR.tenant_id, done.id)
    flaky = await submitted(world, queue, fail="transient")
    await run(ACTOR.tenant_id, flaky.id)
    await run(ACTOR.tenant_id, flaky.id)
    broken = await submitted(world, queue, fail="permanent")
    await run(ACTOR.tenant_id, broken.id)
    stopped = await SubmitTask(world.uow, queue, run.registry, TaskLimits())(
        ACTOR, task_type="cancelled", config={}, input_files=[], request_id=None
    )
    await run(ACTOR.tenant_id, stopped.id)
    # Redelivered after it finished: nothing runs, nothing is counted.
    await run(ACTOR.tenant_id, done.id)

    assert metrics.events == [
        ("started", "scripted"), ("succeeded", "scripted"),
        ("started", "scripted"), ("retried", "scripted"),
        ("started", "scripted"), ("failed", "scripted"),
        ("started", "scripted"), ("failed", "scripted"),
        ("started", "cancelled"), ("cancelled", "cancelled"),
    ]  # fmt: skip
    assert world.uow.committed.tasks[stopped.id].status == TaskStatus.CANCELLED


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_task_outcomes_become_counters_and_one_histogram() -> None:
    metrics, kind = PrometheusTaskMetrics(), "unit.kind"
    before = {
        name: sample(name, task_type=kind)
        for name in (
            "tenantry_jobs_started_total",
            "tenantry_jobs_succeeded_total",
            "tenantry_jobs_failed_total",
            "tenantry_jobs_retried_total",
            "tenantry_jobs_cancelled_total",
            "tenantry_job_duration_seconds_count",
        )
    }
    metrics.started(kind)
    metrics.retried(kind, 0.02)
    metrics.started(kind)
    metrics.succeeded(kind, 3.0)
    metrics.started(kind)
    metrics.failed(kind, 0.5)
    metrics.started(kind)
    metrics.cancelled(kind, 0.1)
    delta = {name: sample(name, task_type=kind) - value for name, value in before.items()}
    assert delta == {
        "tenantry_jobs_started_total": 4,
        "tenantry_jobs_succeeded_total": 1,
        "tenantry_jobs_failed_total": 1,
        "tenantry_jobs_retried_total": 1,
        "tenantry_jobs_cancelled_total": 1,
        "tenantry_job_duration_seconds_count": 4,
    }
    assert sample("tenantry_job_duration_seconds_bucket", task_type=kind, le="0.05") >= 1
    assert sample("tenantry_job_duration_seconds_bucket", task_type=kind, le="2.5") >= 3


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def started(self, method: str) -> None:
        self.events.append(("started", method))

    def finished(self, method: str, route: str, status: int, seconds: float) -> None:
        assert seconds >= 0
        self.events.append(("finished", method, route, status))

    def scrape(self) -> tuple[bytes, str]:
        return b"", "text/plain"


def http_scope(path: str, method: str = "GET") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": []}


async def call(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def with_metrics(app: Any, *, metrics: RequestMetrics) -> RequestContextMiddleware:
    """The request middleware with metrics, as the app installs it."""
    return RequestContextMiddleware(
        app, access_log=AccessLinesKept(), docs_path="/docs", production=False, metrics=metrics
    )


class AccessLinesKept:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def write(self, fields: dict[str, Any]) -> None:
        self.lines.append(fields)


def routed(template: str | None, status: int) -> Any:
    """An app that routes like Litestar: the matched template lands in the scope."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if template is not None:
            scope["path_template"] = template
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


async def test_the_route_is_the_template_and_the_status_the_one_sent() -> None:
    recorder = Recorder()
    await call(
        with_metrics(routed("/api/v1/projects/{project_id}", 404), metrics=recorder),
        http_scope("/api/v1/projects/0190c5e8-1111-7000-8000-000000000000"),
    )
    await call(with_metrics(routed(None, 404), metrics=recorder), http_scope("/nope/42"))
    await call(
        with_metrics(routed("/health", 200), metrics=recorder), http_scope("/health", "BREW")
    )
    assert recorder.events == [
        ("started", "GET"), ("finished", "GET", "/api/v1/projects/{project_id}", 404),
        ("started", "GET"), ("finished", "GET", UNMATCHED, 404),
        ("started", "OTHER"), ("finished", "OTHER", "/health", 200),
    ]  # fmt: skip


async def test_an_app_that_raises_counts_as_500() -> None:
    recorder = Recorder()

    async def broken(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["path_template"] = "/broken"
        raise RuntimeError("boom")

    try:
        await call(with_metrics(broken, metrics=recorder), http_scope("/broken"))
    except RuntimeError:
        pass
    else:
        raise AssertionError("the error must reach the server")
    assert recorder.events == [("started", "GET"), ("finished", "GET", "/broken", 500)]


async def test_metrics_scrapes_and_other_scopes_are_not_counted() -> None:
    recorder = Recorder()
    await call(with_metrics(routed("/metrics", 200), metrics=recorder), http_scope("/metrics"))
    await call(
        with_metrics(routed(None, 200), metrics=recorder),
        {"type": "websocket", "path": "/ws", "headers": []},
    )
    assert recorder.events == []


def request_metrics() -> PrometheusRequestMetrics:
    # An engine that never connects: only its pool's counters are read.
    return PrometheusRequestMetrics(
        create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none", pool_size=7)
    )


async def test_in_progress_rises_during_a_request_and_falls_after() -> None:
    metrics, release, entered = request_metrics(), asyncio.Event(), asyncio.Event()

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["path_template"] = "/unit/slow"
        entered.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    before = sample("tenantry_http_requests_in_progress", method="DELETE")
    errors = sample("tenantry_http_errors_total", status_class="5xx")
    request = asyncio.create_task(
        call(with_metrics(slow, metrics=metrics), http_scope("/unit/slow/1", "DELETE"))
    )
    await entered.wait()
    assert sample("tenantry_http_requests_in_progress", method="DELETE") == before + 1
    release.set()
    await request
    assert sample("tenantry_http_requests_in_progress", method="DELETE") == before
    labels = {"method": "DELETE", "route": "/unit/slow"}
    assert sample("tenantry_http_requests_total", **labels, status="503") >= 1
    assert sample("tenantry_http_request_duration_seconds_count", **labels) >= 1
    assert sample("tenantry_http_errors_total", status_class="5xx") == errors + 1


def test_a_scrape_reads_the_pool_and_renders_the_text_format() -> None:
    metrics = request_metrics()
    metrics.started("PUT")
    metrics.finished("PUT", "/unit/put", 204, 0.003)
    body, content_type = metrics.scrape()
    assert content_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["tenantry_db_pool_size"].samples[0].value == 7
    assert families["tenantry_db_pool_in_use"].samples[0].value == 0
    assert {
        "tenantry_http_requests",
        "tenantry_http_request_duration_seconds",
        "tenantry_http_requests_in_progress",
        "tenantry_db_pool_in_use",
    } <= families.keys()
    # No _created sample beside each counter: they would double every scrape.
    assert b"_created" not in body


def test_only_the_busiest_tenants_have_a_series() -> None:
    gauges = PrometheusUsageGauges()

    def shown() -> dict[str, float]:
        return {
            sample.labels["tenant"]: sample.value
            for family in USAGE_BUSIEST.collect()
            for sample in family.samples
        }

    gauges.busiest([("globex", 5), ("acme", 3)])
    assert shown() == {"globex": 5, "acme": 3}
    gauges.busiest([("acme", 9), ("initech", 4)])
    assert shown() == {"acme": 9, "initech": 4}
    gauges.busiest([])
    assert shown() == {}

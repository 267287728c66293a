"""Tasks end to end: the API, a real arq worker on real Redis, the rows in PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from tenantry import bootstrap
from tenantry.application.tasks import Registry, SubmitTask, TaskContext
from tenantry.application.tasks.handlers.file_inspect import FileInspect
from tenantry.application.tasks.handlers.noop import Noop as BuiltinNoop
from tenantry.application.tasks.handlers.project_export import ProjectExport
from tenantry.application.tasks.maintenance import ReapTasks
from tenantry.application.tasks.runner import RunTask
from tenantry.config import Settings
from tenantry.domain.auth import Actor
from tenantry.domain.tasks import RetryableError, Task, TaskLimits, TaskRepository, TaskStatus
from tenantry.infrastructure.jobs.queue import ArqJobQueue, Dispatcher
from tenantry.infrastructure.jobs.worker import run_task
from tenantry.infrastructure.observability.metrics import queue_depth

from ..conftest import Client, LogLines, plain_url, superuser_headers
from .identity import owner_session
from .test_audit import trail
from .test_health import assert_problem


class NoopConfig(msgspec.Struct, forbid_unknown_fields=True):
    steps: int = 3


class Noop:
    type = "test.noop"
    config_type = NoopConfig

    async def run(self, context: TaskContext, config: NoopConfig) -> dict[str, Any]:
        for step in range(1, config.steps + 1):
            await context.progress(step * 100 // config.steps)
        return {"steps": config.steps}


class Flaky:
    type = "test.flaky"
    config_type = NoopConfig

    async def run(self, context: TaskContext, config: NoopConfig) -> dict[str, Any]:
        raise RetryableError("the upstream timed out")


class Boom:
    type = "test.boom"
    config_type = NoopConfig

    async def run(self, context: TaskContext, config: NoopConfig) -> dict[str, Any]:
        raise ValueError("bad input in row 7")


class Slow:
    type = "test.slow"
    config_type = NoopConfig

    async def run(self, context: TaskContext, config: NoopConfig) -> dict[str, Any]:
        steps = config.steps if config.steps > 3 else 200
        for step in range(steps):
            await context.check_cancelled()
            await context.progress(step * 100 // steps)
            await asyncio.sleep(0.05)
        return {"steps": steps}


async def task_trail(
    client: Client, headers: dict[str, str], task_id: str
) -> list[tuple[str, str]]:
    """A task's events on its tenant's trail, oldest first: (action, actor_type)."""
    events = (await trail(client, headers, target_type="task", target=task_id))["items"]
    return [(e["action"], e["actor_type"]) for e in reversed(events)]


def task_settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(
        settings,
        task_retry_backoff_seconds=0.05,
        task_max_attempts=3,
        task_queue_name=f"test:tasks:{uuid.uuid4().hex}",
    )


TEST_HANDLERS = [FileInspect(), ProjectExport(), BuiltinNoop(), Noop(), Flaky(), Boom(), Slow()]


def app_with(settings: Settings, *, with_worker: bool) -> Any:
    container = bootstrap.Container(settings)
    container.registry = Registry(TEST_HANDLERS)
    return bootstrap.create_app(settings, container=container, with_worker=with_worker)


@pytest.fixture
async def client(settings: Settings, clean_state: None) -> AsyncIterator[Client]:
    async with AsyncTestClient(
        app=app_with(task_settings(settings), with_worker=True)
    ) as test_client:
        yield test_client


async def wait_for(
    client: Client, headers: dict[str, str], task_id: str, *statuses: str
) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        task: dict[str, Any] = (
            await client.get(f"/api/v1/tasks/{task_id}", headers=headers)
        ).json()
        if task["status"] in statuses:
            return task
        await asyncio.sleep(0.1)
    raise AssertionError(f"task {task_id} never reached {statuses}: {task}")


async def submit(
    client: Client, headers: dict[str, str], task_type: str, **body: Any
) -> dict[str, Any]:
    response = await client.post("/api/v1/tasks", headers=headers, json={"type": task_type, **body})
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_a_task_runs_to_completion(client: Client, log_lines: LogLines) -> None:
    owner = await owner_session(client, "acme")
    response = await client.post(
        "/api/v1/tasks",
        headers={**owner, "X-Request-ID": "req-task-1"},
        json={"type": "test.noop", "config": {"steps": 4}},
    )
    assert response.status_code == 202
    created = response.json()
    assert (created["status"], created["progress"]) == ("pending", 0)
    done = await wait_for(client, owner, created["id"], "completed")
    assert done["progress"] == 100
    assert done["result"] == {"steps": 4}
    assert done["completed_at"] is not None
    logs = (await client.get(f"/api/v1/tasks/{created['id']}/logs", headers=owner)).json()
    assert [(log["attempt"], log["success"]) for log in logs] == [(1, True)]
    worker_lines = log_lines.of("tenantry.worker")
    assert worker_lines
    assert {
        line["request_id"] for line in worker_lines if line.get("task_id") == created["id"]
    } == {"req-task-1"}
    # The user's submission, then the worker's end: a system change, with no request.
    events = (await trail(client, owner, target=created["id"]))["items"]
    assert [(e["action"], e["actor_type"], e["request_id"]) for e in events] == [
        ("task.succeeded", "system", None),
        ("task.submitted", "user", "req-task-1"),
    ]
    assert events[0]["actor_id"] is None
    assert events[0]["changes"] == {
        "after": {"type": "test.noop", "status": "completed"},
        "attempts": 1,
    }
    assert events[1]["changes"] == {"after": {"type": "test.noop", "status": "pending"}}


async def test_a_transient_failure_is_retried_then_fails(client: Client) -> None:
    owner = await owner_session(client, "acme")
    task = await submit(client, owner, "test.flaky")
    failed = await wait_for(client, owner, task["id"], "failed")
    assert failed["retry_count"] == 2
    assert failed["error_message"] == "the upstream timed out"
    logs = (await client.get(f"/api/v1/tasks/{task['id']}/logs", headers=owner)).json()
    assert [(log["attempt"], log["success"]) for log in logs] == [
        (1, False),
        (2, False),
        (3, False),
    ]
    # One event for the end, none for the attempts a retry followed.
    assert await task_trail(client, owner, task["id"]) == [
        ("task.submitted", "user"),
        ("task.failed", "system"),
    ]


async def test_a_permanent_failure_fails_at_once(client: Client) -> None:
    owner = await owner_session(client, "acme")
    task = await submit(client, owner, "test.boom")
    failed = await wait_for(client, owner, task["id"], "failed")
    assert (failed["retry_count"], failed["error_message"]) == (0, "bad input in row 7")
    assert len((await client.get(f"/api/v1/tasks/{task['id']}/logs", headers=owner)).json()) == 1


async def test_cancel_a_running_task(client: Client) -> None:
    owner = await owner_session(client, "acme")
    task = await submit(client, owner, "test.slow")
    await wait_for(client, owner, task["id"], "processing")
    cancelled = await client.post(f"/api/v1/tasks/{task['id']}/cancel", headers=owner)
    assert cancelled.status_code == 202
    assert cancelled.json()["cancel_requested"] is True
    final = await wait_for(client, owner, task["id"], "cancelled")
    assert final["progress"] < 100
    assert_problem(await client.post(f"/api/v1/tasks/{task['id']}/cancel", headers=owner), 409)
    # The user's request, then the worker's stop; the refused second cancel left nothing.
    assert await task_trail(client, owner, task["id"]) == [
        ("task.submitted", "user"),
        ("task.cancelled", "user"),
        ("task.stopped", "system"),
    ]


async def test_cancel_a_pending_task_and_double_submit_runs_once(
    settings: Settings, clean_state: None
) -> None:
    quiet = task_settings(settings)
    async with AsyncTestClient(app=app_with(quiet, with_worker=False)) as client:
        owner = await owner_session(client, "acme")
        pending = await submit(client, owner, "test.noop")
        cancelled = (
            await client.post(f"/api/v1/tasks/{pending['id']}/cancel", headers=owner)
        ).json()
        assert cancelled["status"] == "cancelled"
        assert await task_trail(client, owner, pending["id"]) == [
            ("task.submitted", "user"),
            ("task.cancelled", "user"),
        ]
        twice = await submit(client, owner, "test.noop")
        tenant_id = await _tenant(client, owner)
    # The same task enqueued again (a retried request, a reconciler) is one job.
    container = bootstrap.Container(quiet)
    await container.start()
    try:
        async with container.unit_of_work() as uow:
            row = await uow.repository(TaskRepository, tenant_id).get(uuid.UUID(twice["id"]))
        assert row is not None
        await container.job_queue.enqueue(row, request_id=None)
        await container.job_queue.enqueue(row, request_id=None)
        queue = container.job_queue.redis
        jobs = {job.decode() for job in await queue.zrange(quiet.task_queue_name, 0, -1)}
        assert jobs == {pending["id"], twice["id"]}
        async with AsyncTestClient(app=app_with(quiet, with_worker=True)) as client:
            await wait_for(client, owner, twice["id"], "completed")
            # arq takes a job off the queue when it has finished it: once both are gone,
            # whatever either job would do is done.
            deadline = time.monotonic() + 30
            while await queue.zrange(quiet.task_queue_name, 0, -1):
                assert time.monotonic() < deadline, "the worker never finished its jobs"
                await asyncio.sleep(0.05)
            logs = (await client.get(f"/api/v1/tasks/{twice['id']}/logs", headers=owner)).json()
            assert len(logs) == 1
            pending_now = await client.get(f"/api/v1/tasks/{pending['id']}", headers=owner)
            assert pending_now.json()["status"] == "cancelled"
    finally:
        await container.close()
        await container.alchemy.get_engine().dispose()


async def _tenant(client: Client, headers: dict[str, str]) -> uuid.UUID:
    return uuid.UUID((await client.get("/api/v1/auth/me", headers=headers)).json()["tenant_id"])


async def test_file_inspect_records_what_it_found(client: Client) -> None:
    owner = await owner_session(client, "acme")
    data = b"inspect me\n" * 1000
    file_id = (
        await client.post(
            "/api/v1/files", headers=owner, files={"file": ("a.txt", data, "text/plain")}
        )
    ).json()["id"]
    task = await submit(client, owner, "file.inspect", input_files=[file_id])
    done = await wait_for(client, owner, task["id"], "completed", "failed")
    assert done["status"] == "completed", done
    inspection = (await client.get(f"/api/v1/files/{file_id}", headers=owner)).json()["metadata"][
        "inspection"
    ]
    assert inspection["intact"] is True
    assert inspection["content_type"] == "text/plain"
    assert inspection["size"] == len(data)


async def test_bad_submissions_and_other_tenants(client: Client) -> None:
    acme = await owner_session(client, "acme")
    globex = await owner_session(client, "globex")
    assert_problem(await client.post("/api/v1/tasks", headers=acme, json={"type": "no.such"}), 422)
    assert_problem(
        await client.post(
            "/api/v1/tasks", headers=acme, json={"type": "test.noop", "config": {"x": 1}}
        ),
        422,
    )
    assert_problem(
        await client.post(
            "/api/v1/tasks",
            headers=acme,
            json={"type": "file.inspect", "input_files": [str(uuid.uuid4())]},
        ),
        422,
    )
    task = await submit(client, acme, "test.noop")
    for method, path in (("get", ""), ("get", "/logs"), ("post", "/cancel")):
        assert_problem(
            await getattr(client, method)(f"/api/v1/tasks/{task['id']}{path}", headers=globex), 404
        )
    assert (await client.get("/api/v1/tasks", headers=globex)).json()["total"] == 0
    await wait_for(client, acme, task["id"], "completed")
    stats = (await client.get("/api/v1/tasks/stats", headers=acme)).json()
    assert stats["by_status"] == {"completed": 1}
    assert stats["by_type"] == {"test.noop": 1}
    assert stats["mean_duration_ms"] is not None
    listed = (
        await client.get(
            "/api/v1/tasks", headers=acme, params={"status": "completed", "type": "test.noop"}
        )
    ).json()
    assert listed["total"] == 1


async def test_events_stream_progress_up_to_100(client: Client) -> None:
    owner = await owner_session(client, "acme")
    # Two seconds of steps: the stream polls every half second, so it sees several of them
    # even when the stream starts late (a loaded machine, a cluster's extra hop).
    task = await submit(client, owner, "test.slow", config={"steps": 40})
    seen: list[dict[str, Any]] = []
    async with client.stream("GET", f"/api/v1/tasks/{task['id']}/events", headers=owner) as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        async for line in events.aiter_lines():
            if line.startswith("data:"):
                seen.append(msgspec.json.decode(line.removeprefix("data:").strip()))
    progress = [event["progress"] for event in seen]
    assert progress == sorted(progress)
    assert seen[-1]["status"] == "completed"
    assert seen[-1]["progress"] == 100
    assert len(seen) >= 3


async def test_the_reaper_takes_back_tasks_of_a_dead_worker(
    settings: Settings, clean_state: None, database_url: str
) -> None:
    quiet = task_settings(settings)
    async with AsyncTestClient(app=app_with(quiet, with_worker=False)) as client:
        owner = await owner_session(client, "acme")
        retry_me = await submit(client, owner, "test.noop")
        give_up = await submit(client, owner, "test.noop")
        was_cancelled = await submit(client, owner, "test.noop")
    connection = await asyncpg.connect(plain_url(database_url))
    try:
        await connection.execute(
            "update tasks set status = 'processing', heartbeat_at = now() - interval '1 hour', "
            "retry_count = case when id = $2::uuid then 2 else 0 end "
            "where id = any($1::uuid[])",
            [retry_me["id"], give_up["id"], was_cancelled["id"]],
            give_up["id"],
        )
        await connection.execute(
            "update tasks set cancel_requested = true where id = $1::uuid", was_cancelled["id"]
        )
    finally:
        await connection.close()
    container = bootstrap.Container(quiet)
    await container.start()
    try:
        reap = ReapTasks(
            units=container.unit_of_work,
            queue=container.job_queue,
            clock=container.clock,
            stale_after=timedelta(seconds=30),
            max_attempts=3,
        )
        assert await reap() == 3
        assert await reap() == 0
    finally:
        await container.close()
        await container.alchemy.get_engine().dispose()
    async with AsyncTestClient(app=app_with(quiet, with_worker=True)) as client:
        done = await wait_for(client, owner, retry_me["id"], "completed")
        assert done["result"] == {"steps": 3}
        failed = (await client.get(f"/api/v1/tasks/{give_up['id']}", headers=owner)).json()
        assert failed["status"] == "failed"
        assert "stopped responding" in failed["error_message"]
        # Cancelled while its worker was dying: the redelivery ends it instead of running it.
        await wait_for(client, owner, was_cancelled["id"], "cancelled")


async def test_project_export_writes_a_zip_file(client: Client) -> None:
    owner = await owner_session(client, "acme")
    project = (await client.post("/api/v1/projects", headers=owner, json={"name": "Apollo"})).json()
    for title in ("Plan", "Budget", "Crew"):
        await client.post(
            f"/api/v1/projects/{project['id']}/documents",
            headers=owner,
            json={"title": title, "content": f"about {title}"},
        )
    task = await submit(client, owner, "project.export", config={"project_id": project["id"]})
    done = await wait_for(client, owner, task["id"], "completed", "failed")
    assert done["status"] == "completed", done
    assert done["result"]["documents"] == 3
    [file_id] = done["output_files"]
    meta = (await client.get(f"/api/v1/files/{file_id}", headers=owner)).json()
    assert (meta["content_type"], meta["original_filename"]) == ("application/zip", "Apollo.zip")
    content = (await client.get(f"/api/v1/files/{file_id}/content", headers=owner)).content
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        names = archive.namelist()
        assert "project.json" in names
        bodies = sorted(
            archive.read(name).decode() for name in names if name.startswith("documents/")
        )
    assert bodies == [
        "# Budget\n\nabout Budget\n",
        "# Crew\n\nabout Crew\n",
        "# Plan\n\nabout Plan\n",
    ]
    missing = await submit(
        client, owner, "project.export", config={"project_id": str(uuid.uuid4())}
    )
    failed = await wait_for(client, owner, missing["id"], "failed")
    assert failed["error_message"] == "No such project."


async def test_the_built_in_noop_runs(client: Client) -> None:
    owner = await owner_session(client, "acme")
    task = await submit(client, owner, "noop")
    assert (await wait_for(client, owner, task["id"], "completed"))["result"] == {}


class Gated:
    """Runs until told to go on, then checks for cancellation: meanwhile its worker can die or
    its tenant be suspended."""

    type = "test.gated"
    config_type = NoopConfig

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.proceed = asyncio.Event()
        self.finished = 0

    async def run(self, context: TaskContext, config: NoopConfig) -> dict[str, Any]:
        self.started.set()
        await self.proceed.wait()
        await context.check_cancelled()
        self.finished += 1
        return {"ran": True}


class Later:
    """The reaper's clock, an hour ahead: every running task's heartbeat looks stale to it."""

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(hours=1)


@asynccontextmanager
async def worker_side(
    settings: Settings, gate: Gated
) -> AsyncIterator[tuple[bootstrap.Container, RunTask]]:
    """A worker's adapters and its RunTask, driven by the test instead of arq's poll loop."""
    container = bootstrap.Container(settings)
    container.registry = Registry([*TEST_HANDLERS, gate])
    await container.start()
    run = RunTask(
        units=container.unit_of_work,
        registry=container.registry,
        storage=container.storage,
        clock=container.clock,
        file_policy=container.file_policy,
        max_attempts=settings.task_max_attempts,
        backoff=timedelta(seconds=settings.task_retry_backoff_seconds),
        heartbeat=timedelta(minutes=10),
    )
    try:
        yield container, run
    finally:
        await container.close()
        await container.alchemy.get_engine().dispose()


async def actor_of(client: Client, headers: dict[str, str]) -> Actor:
    me = (await client.get("/api/v1/auth/me", headers=headers)).json()
    return Actor(user_id=uuid.UUID(me["id"]), tenant_id=uuid.UUID(me["tenant_id"]), roles=())


async def submit_gated(container: bootstrap.Container, actor: Actor) -> Task:
    async with container.unit_of_work() as uow:
        return await SubmitTask(uow, container.job_queue, container.registry, TaskLimits())(
            actor, task_type="test.gated", config={}, input_files=[], request_id=None
        )


async def fresh_job(run: RunTask, task: Task) -> None:
    """The worker's job function as arq calls it for a newly enqueued job: job_try 1."""
    await run_task({"job_try": 1, "run": run}, str(task.tenant_id), str(task.id), None, None)


async def die_while_running(gate: Gated, run: RunTask, task: Task) -> None:
    """The worker is killed mid-attempt: nothing after this point of the attempt runs."""
    gate.started.clear()
    attempt = asyncio.ensure_future(fresh_job(run, task))
    await asyncio.wait_for(gate.started.wait(), timeout=30)
    attempt.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await attempt


async def test_attempts_killed_with_their_worker_count_until_the_task_fails(
    settings: Settings, clean_state: None
) -> None:
    quiet, gate = task_settings(settings), Gated()
    async with AsyncTestClient(app=app_with(quiet, with_worker=False)) as client:
        owner = await owner_session(client, "acme")
        actor = await actor_of(client, owner)
        async with worker_side(quiet, gate) as (container, run):
            task = await submit_gated(container, actor)
            reap = ReapTasks(
                units=container.unit_of_work,
                queue=container.job_queue,
                clock=Later(),
                stale_after=timedelta(seconds=30),
                max_attempts=quiet.task_max_attempts,
            )
            for _ in range(quiet.task_max_attempts):
                await die_while_running(gate, run, task)
                assert await reap() == 1
            # A late re-delivery of the job (arq's own after a kill) runs nothing.
            gate.started.clear()
            gate.proceed.set()
            await fresh_job(run, task)
            assert not gate.started.is_set()
        failed = (await client.get(f"/api/v1/tasks/{task.id}", headers=owner)).json()
        assert (failed["status"], failed["retry_count"]) == ("failed", quiet.task_max_attempts - 1)
        assert "stopped responding" in failed["error_message"]
        assert gate.finished == 0


async def test_suspension_stops_queued_and_running_tasks(
    settings: Settings, clean_state: None
) -> None:
    quiet, gate = task_settings(settings), Gated()
    async with AsyncTestClient(app=app_with(quiet, with_worker=False)) as client:
        acme = await actor_of(client, await owner_session(client, "acme"))
        globex = await actor_of(client, await owner_session(client, "globex"))
        superuser = await superuser_headers(client, quiet)
        async with worker_side(quiet, gate) as (container, run):
            running = await submit_gated(container, acme)
            queued = await submit_gated(container, acme)
            other = await submit_gated(container, globex)
            attempt = asyncio.ensure_future(fresh_job(run, running))
            await asyncio.wait_for(gate.started.wait(), timeout=30)
            suspended = await client.patch(
                f"/api/v1/admin/tenants/{acme.tenant_id}",
                headers=superuser,
                json={"status": "suspended"},
            )
            assert suspended.json()["status"] == "suspended"
            # At once, before any worker moves: the queued one is cancelled where its users
            # see it, the running one asked to stop, another tenant's left alone.
            async with container.unit_of_work() as uow:
                at_once = [
                    await uow.repository(TaskRepository, task.tenant_id).get(task.id)
                    for task in (running, queued, other)
                ]
            assert [t and (t.status, t.cancel_requested) for t in at_once] == [
                (TaskStatus.PROCESSING, True),
                (TaskStatus.CANCELLED, True),
                (TaskStatus.PENDING, False),
            ]
            gate.proceed.set()
            await asyncio.wait_for(attempt, timeout=30)
            assert gate.finished == 0  # the running one stopped at its cancellation check
            gate.started.clear()
            await asyncio.wait_for(fresh_job(run, queued), timeout=30)
            assert not gate.started.is_set()  # the queued one's handler never ran
            await asyncio.wait_for(fresh_job(run, other), timeout=30)  # others' run as usual
            assert gate.finished == 1
            async with container.unit_of_work() as uow:
                rows = {
                    name: await uow.repository(TaskRepository, task.tenant_id).get(task.id)
                    for name, task in (("running", running), ("queued", queued), ("other", other))
                }
                queued_logs = await uow.repository(TaskRepository, acme.tenant_id).logs(queued.id)
    assert {name: row and (row.status, row.error_message) for name, row in rows.items()} == {
        "running": (TaskStatus.CANCELLED, "The tenant was suspended."),
        "queued": (TaskStatus.CANCELLED, "The tenant was suspended."),
        "other": (TaskStatus.COMPLETED, None),
    }
    assert queued_logs == []


async def test_an_idle_worker_is_woken_by_an_enqueue(settings: Settings, clean_state: None) -> None:
    quiet = task_settings(settings)
    async with AsyncTestClient(app=app_with(quiet, with_worker=False)) as client:
        owner = await owner_session(client, "acme")
        container = bootstrap.Container(quiet)
        container.registry = Registry(TEST_HANDLERS)
        await container.start()
        # Stopped as `tenantry dev` stops it: a task seen completed through the API may still
        # have its job finishing in arq, which closing the worker then cancels.
        in_process = bootstrap.InProcessWorker(container)
        await in_process.start()
        # Its own polls an hour apart: only the wake-up that follows the enqueue (or the one
        # its subscription starts with) can start the task. Set before the worker's task has
        # run a step: start() returns without yielding to it.
        assert in_process.worker is not None
        in_process.worker.poll_wait = 3600  # type: ignore[attr-defined]
        try:
            task = await submit(client, owner, "test.noop")
            assert (await wait_for(client, owner, task["id"], "completed"))["progress"] == 100
            second = await submit(client, owner, "test.noop")
            await wait_for(client, owner, second["id"], "completed")
        finally:
            await in_process.stop()
            await container.close()
            await container.alchemy.get_engine().dispose()


async def test_pending_tasks_past_the_limit_are_refused_even_at_once(
    settings: Settings, clean_state: None
) -> None:
    """Six submissions of one tenant at the same moment against a limit of three: exactly
    three wait to run, three are told to come back (429, Retry-After); another tenant is not
    held back by them."""
    capped = msgspec.structs.replace(task_settings(settings), task_max_pending_per_tenant=3)
    async with AsyncTestClient(app=app_with(capped, with_worker=False)) as client:
        acme = await owner_session(client, "acme")
        globex = await owner_session(client, "globex")
        answers = await asyncio.gather(
            *(
                client.post("/api/v1/tasks", headers=acme, json={"type": "test.noop"})
                for _ in range(6)
            )
        )
        assert sorted(a.status_code for a in answers) == [202] * 3 + [429] * 3
        refused = next(a for a in answers if a.status_code == 429)
        problem = assert_problem(refused, 429)
        assert int(refused.headers["retry-after"]) > 0
        assert problem["errors"] == [{"field": "task_limits.pending", "message": "at most 3"}]
        listed = (await client.get("/api/v1/tasks", headers=acme)).json()
        assert listed["total"] == 3
        other = await client.post("/api/v1/tasks", headers=globex, json={"type": "test.noop"})
        assert other.status_code == 202, other.text


class FairQueue:
    """An ArqJobQueue of a queue of its own on the test's Redis, and what a test reads of it;
    its keys, and its tasks' jobs, deleted at the end."""

    def __init__(self, redis_url: str, window: int) -> None:
        self.name = f"test:tasks:{uuid.uuid4().hex}"
        self.queue = ArqJobQueue(redis_url, queue_name=self.name, timeout=5, window=window)
        self.made: list[Task] = []

    def tasks(self, tenant: uuid.UUID, count: int) -> list[Task]:
        now = datetime.now(UTC)
        made = [
            Task(id=uuid.uuid4(), tenant_id=tenant, type="noop", created_at=now, updated_at=now)
            for _ in range(count)
        ]
        self.made += made
        return made

    async def due(self) -> set[str]:
        # One dispatch gives its jobs one score: compared as sets.
        return {job.decode() for job in await self.queue.redis.zrange(self.name, 0, -1)}

    async def end(self, *ended: str) -> None:
        """Jobs that ended: arq takes them out of the queue."""
        await self.queue.redis.zrem(self.name, *ended)

    async def close(self) -> None:
        redis = self.queue.redis
        keys = [key async for key in redis.scan_iter(match=f"{self.name}*")]
        await redis.delete(*keys, *(f"arq:job:{task.id}" for task in self.made))
        await self.queue.close()


@pytest.fixture
async def fair_queues(redis_url: str) -> AsyncIterator[Callable[[int], FairQueue]]:
    made: list[FairQueue] = []

    def fair_queue(window: int) -> FairQueue:
        made.append(FairQueue(redis_url, window))
        return made[-1]

    yield fair_queue
    for queue in made:
        await queue.close()


def ids(*chosen: Task) -> set[str]:
    return {str(task.id) for task in chosen}


async def test_the_dispatch_takes_tenants_in_turn_within_its_window(
    fair_queues: Callable[[int], FairQueue],
) -> None:
    """The queue's fair dispatch on a real Redis: a tenant's tasks wait in its backlog, and
    the queue takes the tenants in turn, never holding more than its window."""
    fair = fair_queues(4)
    a, b = fair.tasks(uuid.uuid4(), 10), fair.tasks(uuid.uuid4(), 3)
    for task in [*a, *b, a[0]]:  # a[0] twice: queued once
        await fair.queue.enqueue(task, request_id=None)
    # The window was full with A's first four before B came.
    assert await fair.due() == ids(*a[:4])
    # What waits, backlogs included, is what the dashboards show as pending.
    assert await queue_depth(fair.queue.redis, fair.name) == (13, 0)
    dispatch = Dispatcher(fair.name, window=4, running_limit=None)
    assert await dispatch(fair.queue.redis) == 0
    # Two jobs end: B's first goes in, and A's fifth.
    await fair.end(str(a[0].id), str(a[1].id))
    assert await dispatch(fair.queue.redis) == 2
    assert await fair.due() == ids(a[2], a[3], b[0], a[4])
    await fair.end(*(await fair.due()))
    # Then B and A in turn: not A's next four.
    assert await dispatch(fair.queue.redis) == 4
    assert await fair.due() == ids(b[1], a[5], b[2], a[6])
    # B's backlog is empty: it has left the ring; A's remains.
    ring = await fair.queue.redis.lrange(f"{fair.name}:fair:ring", 0, -1)
    assert [tenant.decode() for tenant in ring] == [str(a[0].tenant_id)]


async def test_a_tenant_past_its_running_limit_is_passed_over(
    fair_queues: Callable[[int], FairQueue],
) -> None:
    """A tenant limited to 2 tasks at once has no more than 2 in the queue, however wide the
    window; the others' tasks take the room, and its next goes in as one of its own ends."""
    fair = fair_queues(10)
    a, b = fair.tasks(uuid.uuid4(), 6), fair.tasks(uuid.uuid4(), 3)
    for task in a:
        await fair.queue.enqueue(task, request_id=None, running_limit=2)
    for task in b:
        await fair.queue.enqueue(task, request_id=None, running_limit=0)
    assert await fair.due() == ids(*a[:2], *b)
    # One of A's ends: its third goes in, and no more.
    await fair.end(str(a[0].id))
    assert await Dispatcher(fair.name, window=10, running_limit=None)(fair.queue.redis) == 1
    assert await fair.due() == ids(a[1], a[2], *b)
    # A limit lifted by a later submission holds from then on.
    a += fair.tasks(a[0].tenant_id, 1)
    await fair.queue.enqueue(a[-1], request_id=None, running_limit=0)
    assert await fair.due() == ids(*a[1:], *b)

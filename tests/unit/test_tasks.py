from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import re
import threading
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import msgspec
import pytest

from tenantry.application.tasks import (
    CancelTask,
    HandlerError,
    Registry,
    SubmitTask,
    TaskContext,
)
from tenantry.application.tasks.handlers.file_inspect import FileInspect
from tenantry.application.tasks.handlers.noop import Noop
from tenantry.application.tasks.handlers.project_export import ProjectExport
from tenantry.application.tasks.maintenance import ReapTasks
from tenantry.application.tasks.runner import SERVICE_UNAVAILABLE, RunTask
from tenantry.domain.audit import AuditEvent
from tenantry.domain.auth import Actor
from tenantry.domain.documents import Document
from tenantry.domain.errors import Invalid, Unavailable
from tenantry.domain.files import PNG, FilePolicy, StoredFile
from tenantry.domain.projects import ProjectRepository
from tenantry.domain.tasks import (
    RetryableError,
    TaskCancelled,
    TaskFinished,
    TaskLimits,
    TaskMetrics,
    TaskStatus,
    TooManyPendingTasks,
)
from tenantry.domain.tenants import Tenant, TenantStatus
from tenantry.domain.users import Role

from .fakes import FakeJobQueue, FakeStorage, FakeUnitOfWork, World

ACTOR = Actor(user_id=uuid4(), tenant_id=uuid4(), roles=(Role.MEMBER,))
POLICY = FilePolicy(max_bytes=10**6, quota_bytes=10**9, allowed_types=frozenset({PNG}))


class Config(msgspec.Struct, forbid_unknown_fields=True):
    fail: str = ""


class Scripted:
    type = "scripted"
    config_type = Config

    async def run(self, context: TaskContext, config: Config) -> dict[str, Any]:
        await context.progress(50)
        if config.fail == "transient":
            raise RetryableError("try later")
        if config.fail == "permanent":
            raise ValueError("broken")
        if config.fail == "unavailable":
            raise Unavailable("object store unreachable (EndpointConnectionError at 10.0.0.7)")
        if config.fail == "cancel":
            await context.check_cancelled()
        return {"done": True}


def units_of(world: World) -> Callable[[], AbstractAsyncContextManager[FakeUnitOfWork]]:
    @asynccontextmanager
    async def units() -> AsyncIterator[FakeUnitOfWork]:
        async with world.uow as uow:
            yield uow

    return units


def tenant_of(world: World, status: TenantStatus = TenantStatus.ACTIVE) -> None:
    """ACTOR's tenant, in the given status."""
    now = world.clock.now()
    world.uow.committed.tenants[ACTOR.tenant_id] = Tenant(
        id=ACTOR.tenant_id,
        name="Acme",
        slug="acme",
        status=status,
        settings={},
        created_at=now,
        updated_at=now,
    )


def runner(
    world: World,
    attempts: int = 3,
    *,
    registry: Registry | None = None,
    metrics: TaskMetrics | None = None,
    storage: FakeStorage | None = None,
) -> RunTask:
    return RunTask(
        units=units_of(world),
        registry=registry or Registry([Scripted(), Noop()]),
        storage=storage or FakeStorage(),
        clock=world.clock,
        file_policy=POLICY,
        max_attempts=attempts,
        backoff=timedelta(seconds=2),
        heartbeat=timedelta(seconds=60),
        metrics=metrics,
    )


async def submitted(world: World, queue: FakeJobQueue, fail: str = "") -> Any:
    if ACTOR.tenant_id not in world.uow.committed.tenants:
        tenant_of(world)
    submit = SubmitTask(world.uow, queue, Registry([Scripted(), Noop()]), TaskLimits())
    return await submit(
        ACTOR, task_type="scripted", config={"fail": fail}, input_files=[], request_id="r1"
    )


async def test_submit_validates_then_commits_then_enqueues() -> None:
    world, queue = World(), FakeJobQueue()
    task = await submitted(world, queue)
    assert queue.enqueued == [task.id]
    assert world.uow.committed.tasks[task.id].status == TaskStatus.PENDING
    for bad in ({"type": "nope", "config": {}}, {"type": "scripted", "config": {"other": 1}}):
        with pytest.raises(Invalid):
            await SubmitTask(world.uow, queue, Registry([Scripted()]), TaskLimits())(
                ACTOR, task_type=bad["type"], config=bad["config"], input_files=[], request_id=None
            )
    with pytest.raises(Invalid):
        await SubmitTask(world.uow, queue, Registry([Scripted()]), TaskLimits())(
            ACTOR, task_type="scripted", config={}, input_files=[uuid4()], request_id=None
        )
    assert queue.enqueued == [task.id]


async def test_a_run_completes_with_progress_and_a_log() -> None:
    world, queue = World(), FakeJobQueue()
    task = await submitted(world, queue)
    assert await runner(world)(ACTOR.tenant_id, task.id) is None
    done = world.uow.committed.tasks[task.id]
    assert (done.status, done.progress, done.result) == (TaskStatus.COMPLETED, 100, {"done": True})
    assert [(log.attempt, log.success) for log in world.uow.committed.task_logs] == [(1, True)]


async def test_transient_failures_back_off_then_fail() -> None:
    world, queue = World(), FakeJobQueue()
    task = await submitted(world, queue, fail="transient")
    run = runner(world, attempts=3)
    assert await run(ACTOR.tenant_id, task.id) == timedelta(seconds=2)
    assert world.uow.committed.tasks[task.id].status == TaskStatus.PENDING
    assert await run(ACTOR.tenant_id, task.id) == timedelta(seconds=4)
    assert await run(ACTOR.tenant_id, task.id) is None
    failed = world.uow.committed.tasks[task.id]
    assert (failed.status, failed.error_message, failed.retry_count) == (
        TaskStatus.FAILED,
        "try later",
        2,
    )
    assert failed.progress == 50


async def test_a_service_out_of_reach_is_retried_without_naming_it() -> None:
    """The database lost or the object store down under a handler: the attempt is retried as
    a RetryableError's is, and its users read no server's name."""
    world, queue = World(), FakeJobQueue()
    task = await submitted(world, queue, fail="unavailable")
    run = runner(world, attempts=2)
    assert await run(ACTOR.tenant_id, task.id) == timedelta(seconds=2)
    assert world.uow.committed.tasks[task.id].status == TaskStatus.PENDING
    assert await run(ACTOR.tenant_id, task.id) is None
    failed = world.uow.committed.tasks[task.id]
    assert (failed.status, failed.error_message) == (TaskStatus.FAILED, SERVICE_UNAVAILABLE)
    logged = [log.error for log in world.uow.committed.task_logs]
    assert logged == [SERVICE_UNAVAILABLE] * 2


async def test_permanent_failures_fail_at_once() -> None:
    world, queue = World(), FakeJobQueue()
    task = await submitted(world, queue, fail="permanent")
    assert await runner(world)(ACTOR.tenant_id, task.id) is None
    assert world.uow.committed.tasks[task.id].status == TaskStatus.FAILED


async def test_cancellation_before_and_during_a_run() -> None:
    world, queue = World(), FakeJobQueue()
    pending = await submitted(world, queue)
    await CancelTask(world.uow, world.clock)(ACTOR, pending.id)
    assert await runner(world)(ACTOR.tenant_id, pending.id) is None
    assert world.uow.committed.task_logs == []  # a cancelled task never starts
    with pytest.raises(TaskFinished):
        await CancelTask(world.uow, world.clock)(ACTOR, pending.id)

    # Its worker died after the cancel was asked for: the redelivery ends it, not runs it.
    orphaned = await submitted(world, queue, fail="cancel")
    world.uow.committed.tasks[orphaned.id] = msgspec.structs.replace(
        world.uow.committed.tasks[orphaned.id], status=TaskStatus.PROCESSING, cancel_requested=True
    )
    assert await runner(world)(ACTOR.tenant_id, orphaned.id) is None
    assert world.uow.committed.tasks[orphaned.id].status == TaskStatus.CANCELLED


async def test_a_redelivered_finished_task_does_not_run_again() -> None:
    world, queue = World(), FakeJobQueue()
    task = await submitted(world, queue)
    await runner(world)(ACTOR.tenant_id, task.id)
    await runner(world)(ACTOR.tenant_id, task.id)
    assert len(world.uow.committed.task_logs) == 1


class Reporting:
    """Reports some progress, then waits until told to go on."""

    type = "reporting"
    config_type = Config

    def __init__(self) -> None:
        self.proceed = asyncio.Event()

    async def run(self, context: TaskContext, config: Config) -> dict[str, Any]:
        await context.progress(40)
        await self.proceed.wait()
        await context.progress(70)
        return {}


async def test_progress_reaches_the_row_while_the_handler_runs_and_with_its_end() -> None:
    world, handler = World(), Reporting()
    tenant_of(world)
    registry = Registry([handler])
    task = await SubmitTask(world.uow, FakeJobQueue(), registry, TaskLimits())(
        ACTOR, task_type="reporting", config={}, input_files=[], request_id=None
    )
    attempt = asyncio.create_task(runner(world, registry=registry)(ACTOR.tenant_id, task.id))
    while world.uow.committed.tasks[task.id].progress != 40:
        assert not attempt.done()
        await asyncio.sleep(0.01)
    handler.proceed.set()
    assert await attempt is None
    done = world.uow.committed.tasks[task.id]
    assert (done.status, done.progress) == (TaskStatus.COMPLETED, 100)


class CancelledMidway(Scripted):
    async def run(self, context: TaskContext, config: Config) -> dict[str, Any]:
        await context.progress(50)
        raise TaskCancelled


async def test_a_cancelled_attempt_keeps_the_progress_it_reported_last() -> None:
    world = World()
    tenant_of(world)
    registry = Registry([CancelledMidway()])
    task = await SubmitTask(world.uow, FakeJobQueue(), registry, TaskLimits())(
        ACTOR, task_type="scripted", config={}, input_files=[], request_id=None
    )
    assert await runner(world, registry=registry)(ACTOR.tenant_id, task.id) is None
    ended = world.uow.committed.tasks[task.id]
    assert (ended.status, ended.progress) == (TaskStatus.CANCELLED, 50)
    assert [log.success for log in world.uow.committed.task_logs] == [False]


class Gated:
    """Runs until told to go on, then checks for cancellation: a worker can die, or the
    tenant be suspended, while it waits."""

    type = "gated"
    config_type = Config

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.proceed = asyncio.Event()
        self.finished = 0

    async def run(self, context: TaskContext, config: Config) -> dict[str, Any]:
        self.started.set()
        await self.proceed.wait()
        await context.check_cancelled()
        self.finished += 1
        return {"ran": True}


async def gated(world: World, gate: Gated) -> Any:
    if ACTOR.tenant_id not in world.uow.committed.tenants:
        tenant_of(world)
    return await SubmitTask(world.uow, FakeJobQueue(), Registry([gate]), TaskLimits())(
        ACTOR, task_type="gated", config={}, input_files=[], request_id=None
    )


async def die_while_running(gate: Gated, attempt: Any) -> None:
    """The worker is killed mid-attempt: nothing after this point of the attempt runs."""
    gate.started.clear()
    running = asyncio.ensure_future(attempt)
    await asyncio.wait_for(gate.started.wait(), timeout=10)
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running


async def test_attempts_that_die_with_their_worker_count_until_the_task_fails() -> None:
    world, queue, gate = World(), FakeJobQueue(), Gated()
    task = await gated(world, gate)
    run = runner(world, attempts=3, registry=Registry([gate]))
    reap = ReapTasks(
        units=units_of(world),
        queue=queue,
        clock=world.clock,
        stale_after=timedelta(seconds=30),
        max_attempts=3,
    )
    for died in range(1, 4):
        # Each re-run is a new arq job, its job_try 1 again: only the row can count.
        await die_while_running(gate, run(ACTOR.tenant_id, task.id))
        world.clock.advance(minutes=5)
        assert await reap() == 1
        assert world.uow.committed.tasks[task.id].retry_count == died - 1
    final = world.uow.committed.tasks[task.id]
    assert final.status == TaskStatus.FAILED, final
    assert final.error_message == "The worker running this task stopped responding."
    # Failed by the reap: the system's change, on the trail with it.
    events = world.uow.committed.rows_of(AuditEvent).values()
    reaped = [e for e in events if e.action == "task.reaped"]
    assert [(e.actor_type, e.target_id) for e in reaped] == [("system", task.id)]
    assert queue.enqueued == [task.id, task.id]  # two re-runs after the first attempt
    # A re-delivery after the last attempt (arq's own) runs nothing more.
    gate.proceed.set()
    assert await run(ACTOR.tenant_id, task.id) is None
    assert gate.finished == 0


async def test_a_redelivery_after_the_last_attempt_died_fails_the_task() -> None:
    world, gate = World(), Gated()
    task = await gated(world, gate)
    run = runner(world, attempts=2, registry=Registry([gate]))
    for _ in range(2):
        # arq re-runs a killed worker's job itself: no reaper involved.
        await die_while_running(gate, run(ACTOR.tenant_id, task.id))
    gate.proceed.set()
    assert await run(ACTOR.tenant_id, task.id) is None
    final = world.uow.committed.tasks[task.id]
    assert (final.status, final.retry_count) == (TaskStatus.FAILED, 1)
    assert gate.finished == 0


async def test_log_rows_carry_the_rows_attempt_number() -> None:
    world, queue = World(), FakeJobQueue()
    task = await submitted(world, queue, fail="transient")
    run = runner(world, attempts=3)
    for _ in range(3):
        await run(ACTOR.tenant_id, task.id)  # as if each were a fresh arq job, at job_try 1
    assert [log.attempt for log in world.uow.committed.task_logs] == [1, 2, 3]
    assert world.uow.committed.tasks[task.id].status == TaskStatus.FAILED


async def test_a_suspended_tenants_queued_task_never_runs() -> None:
    world, gate = World(), Gated()
    task = await gated(world, gate)
    tenant_of(world, TenantStatus.SUSPENDED)
    gate.proceed.set()
    assert await runner(world, registry=Registry([gate]))(ACTOR.tenant_id, task.id) is None
    final = world.uow.committed.tasks[task.id]
    assert (final.status, final.error_message) == (
        TaskStatus.CANCELLED,
        "The tenant was suspended.",
    )
    assert not gate.started.is_set()
    assert world.uow.committed.task_logs == []


async def test_a_suspended_tenants_running_task_stops_at_its_next_check() -> None:
    world, gate = World(), Gated()
    task = await gated(world, gate)
    running = asyncio.ensure_future(
        runner(world, registry=Registry([gate]))(ACTOR.tenant_id, task.id)
    )
    await asyncio.wait_for(gate.started.wait(), timeout=10)
    tenant_of(world, TenantStatus.SUSPENDED)
    gate.proceed.set()
    assert await running is None
    final = world.uow.committed.tasks[task.id]
    assert (final.status, final.error_message) == (
        TaskStatus.CANCELLED,
        "The tenant was suspended.",
    )
    assert gate.finished == 0


class Ticker:
    """Counts the turns a coroutine gets on the loop while something else runs."""

    def __init__(self) -> None:
        self.ticks = 0

    async def run(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0)


async def test_project_export_compresses_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world, queue, storage, ticker = World(), FakeJobQueue(), FakeStorage(), Ticker()
    tenant_of(world)
    async with world.uow as uow:
        project = await uow.repository(ProjectRepository, ACTOR.tenant_id).add(
            owner_id=None, name="Apollo", description=""
        )
        await uow.commit()
    now = world.clock.now()
    for n in range(250):  # three pages
        document = Document(
            id=uuid4(),
            tenant_id=ACTOR.tenant_id,
            project_id=project.id,
            created_by=None,
            title=f"doc {n}",
            content=f"line {n}\n" * 200,
            metadata={},
            version=1,
            created_at=now,
            updated_at=now,
        )
        world.uow.committed.documents[document.id] = document
    loop_thread = threading.get_ident()
    writes: list[tuple[int, int]] = []  # (thread, loop turns of the ticker so far)
    write = zipfile.ZipFile.writestr

    def recorded(archive: zipfile.ZipFile, *args: Any, **kwargs: Any) -> None:
        writes.append((threading.get_ident(), ticker.ticks))
        write(archive, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", recorded)
    registry = Registry([ProjectExport()])
    task = await SubmitTask(world.uow, queue, registry, TaskLimits())(
        ACTOR,
        task_type="project.export",
        config={"project_id": str(project.id)},
        input_files=[],
        request_id=None,
    )
    ticking = asyncio.create_task(ticker.run())
    try:
        await runner(world, registry=registry, storage=storage)(ACTOR.tenant_id, task.id)
    finally:
        ticking.cancel()
    done = world.uow.committed.tasks[task.id]
    assert done.status == TaskStatus.COMPLETED, done.error_message
    assert done.result is not None
    assert done.result["documents"] == 250
    [stored] = storage.objects.values()
    with zipfile.ZipFile(io.BytesIO(stored)) as archive:
        assert len(archive.namelist()) == 251
    assert len(writes) == 251
    assert all(thread != loop_thread for thread, _ in writes)
    # The loop went on serving others between the first entry and the last.
    assert writes[0][1] < writes[-1][1]


class Watched(FakeStorage):
    """Hands out each object as one big chunk, noting the ticker's turns around each."""

    def __init__(self, ticker: Ticker) -> None:
        super().__init__()
        self.ticker = ticker
        self.turns: list[tuple[int, int]] = []  # (when handed out, when the next was asked)

    async def get(
        self, key: str, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        handed = self.ticker.ticks
        yield self.objects[key][start : None if end is None else end + 1]
        self.turns.append((handed, self.ticker.ticks))


async def test_file_inspect_hashes_a_large_chunk_off_the_event_loop() -> None:
    world, queue, ticker = World(), FakeJobQueue(), Ticker()
    storage = Watched(ticker)
    tenant_of(world)
    data = bytes(range(256)) * (16 * 1024)  # 4 MiB
    file_id = uuid4()
    storage.objects["big"] = data
    world.uow.committed.files[file_id] = StoredFile(
        id=file_id,
        tenant_id=ACTOR.tenant_id,
        original_filename="big.bin",
        size=len(data),
        content_type="application/octet-stream",
        claimed_content_type=None,
        sha256=hashlib.sha256(data).hexdigest(),
        metadata={},
        storage_key="big",
        created_by=None,
        created_at=world.clock.now(),
    )
    registry = Registry([FileInspect()])
    task = await SubmitTask(world.uow, queue, registry, TaskLimits())(
        ACTOR, task_type="file.inspect", config={}, input_files=[file_id], request_id=None
    )
    ticking = asyncio.create_task(ticker.run())
    try:
        await runner(world, registry=registry, storage=storage)(ACTOR.tenant_id, task.id)
    finally:
        ticking.cancel()
    assert world.uow.committed.tasks[task.id].status == TaskStatus.COMPLETED
    inspection = world.uow.committed.files[file_id].metadata["inspection"]
    assert (inspection["intact"], inspection["size"]) == (True, len(data))
    [(handed, asked)] = storage.turns
    assert handed < asked  # the loop ran other work while the chunk was hashed


def trail(world: World) -> list[AuditEvent]:
    """The committed trail, oldest first."""
    return sorted(world.uow.committed.rows_of(AuditEvent).values(), key=lambda e: e.id)


async def test_submit_and_cancel_are_one_event_each_without_the_configs_values() -> None:
    world, queue = World(), FakeJobQueue()
    tenant_of(world)
    submit = SubmitTask(world.uow, queue, Registry([Scripted()]), TaskLimits())
    with pytest.raises(Invalid):
        await submit(ACTOR, task_type="nope", config={}, input_files=[], request_id=None)
    task = await submit(
        ACTOR, task_type="scripted", config={"fail": "hunter2"}, input_files=[], request_id=None
    )
    await CancelTask(world.uow, world.clock)(ACTOR, task.id)
    with pytest.raises(TaskFinished):
        await CancelTask(world.uow, world.clock)(ACTOR, task.id)
    submitted_, cancelled = trail(world)
    assert [(e.action, e.actor_type, e.actor_id, e.target_id) for e in trail(world)] == [
        ("task.submitted", "user", ACTOR.user_id, task.id),
        ("task.cancelled", "user", ACTOR.user_id, task.id),
    ]
    assert submitted_.changes == {"after": {"type": "scripted", "status": "pending"}}
    assert cancelled.changes == {
        "before": {"status": "pending", "cancel_requested": False},
        "after": {"status": "cancelled", "cancel_requested": True},
    }
    assert "hunter2" not in repr(trail(world))


async def test_the_worker_records_a_tasks_end_once_as_the_system() -> None:
    world, queue = World(), FakeJobQueue()
    done = await submitted(world, queue)
    flaky = await submitted(world, queue, fail="transient")
    broken = await submitted(world, queue, fail="permanent")
    run = runner(world, attempts=3)
    await run(ACTOR.tenant_id, done.id)
    await run(ACTOR.tenant_id, done.id)  # redelivered: runs nothing, records nothing
    for _ in range(3):  # no event for the attempts a retry follows
        await run(ACTOR.tenant_id, flaky.id)
    await run(ACTOR.tenant_id, broken.id)
    ends = [e for e in trail(world) if e.actor_type == "system"]
    assert [(e.action, e.target_id, e.changes) for e in ends] == [
        (
            "task.succeeded",
            done.id,
            {"after": {"type": "scripted", "status": "completed"}, "attempts": 1},
        ),
        (
            "task.failed",
            flaky.id,
            {"after": {"type": "scripted", "status": "failed"}, "attempts": 3},
        ),
        (
            "task.failed",
            broken.id,
            {"after": {"type": "scripted", "status": "failed"}, "attempts": 1},
        ),
    ]
    assert {(e.actor_id, e.tenant_id, e.request_id) for e in ends} == {
        (None, ACTOR.tenant_id, None)
    }
    # The handlers' error texts and results are not the trail's.
    assert "try later" not in repr(ends)
    assert "broken" not in repr(ends)


async def test_tasks_the_worker_stops_or_finds_dead_are_recorded_as_such() -> None:
    world, gate = World(), Gated()
    run = runner(world, attempts=2, registry=Registry([gate]))
    # Cancelled by its user while it runs: the user's request, then the worker's stop.
    cancelled = await gated(world, gate)
    running = asyncio.ensure_future(run(ACTOR.tenant_id, cancelled.id))
    await asyncio.wait_for(gate.started.wait(), timeout=10)
    await CancelTask(world.uow, world.clock)(ACTOR, cancelled.id)
    gate.proceed.set()
    await running
    # Its last attempt died with its worker: the redelivery ends it as reaped.
    dead = await gated(world, gate)
    gate.proceed.clear()
    for _ in range(2):
        await die_while_running(gate, run(ACTOR.tenant_id, dead.id))
    await run(ACTOR.tenant_id, dead.id)
    # Queued when its tenant was suspended: ended by its start.
    queued = await gated(world, gate)
    tenant_of(world, TenantStatus.SUSPENDED)
    await run(ACTOR.tenant_id, queued.id)
    assert [(e.action, e.actor_type, e.target_id) for e in trail(world)] == [
        ("task.submitted", "user", cancelled.id),
        ("task.cancelled", "user", cancelled.id),
        ("task.stopped", "system", cancelled.id),
        ("task.submitted", "user", dead.id),
        ("task.reaped", "system", dead.id),
        ("task.submitted", "user", queued.id),
        ("task.stopped", "system", queued.id),
    ]
    assert trail(world)[2].changes == {
        "after": {"type": "gated", "status": "cancelled"},
        "attempts": 1,
    }


def guide_handlers() -> list[Any]:
    """The handlers of the Python snippet of docs/tasks.md, "Write a task handler", as a
    module of TENANTRY_TASK_MODULES would list them."""
    guide = (Path(__file__).parents[2] / "docs" / "tasks.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", guide, re.DOTALL)
    assert snippet is not None
    namespace: dict[str, Any] = {}
    exec(compile(snippet[1], "docs/tasks.md", "exec"), namespace)
    return [handler() for handler in namespace["TASK_HANDLERS"]]


async def test_the_guides_handler_is_checked_submitted_and_run() -> None:
    [greet] = guide_handlers()
    registry = Registry([greet])
    with pytest.raises(Invalid) as refused:
        registry.config("demo.greet", {"times": 2})
    assert refused.value.fields == {"config.name": "Object missing required field `name`"}

    world, queue = World(), FakeJobQueue()
    tenant_of(world)
    task = await SubmitTask(world.uow, queue, registry, TaskLimits())(
        ACTOR,
        task_type="demo.greet",
        config={"name": "Ada", "times": 2},
        input_files=[],
        request_id=None,
    )
    await runner(world, registry=registry)(ACTOR.tenant_id, task.id)
    done = world.uow.committed.tasks[task.id]
    assert (done.status, done.result) == (
        TaskStatus.COMPLETED,
        {"greeting": "Hello, Ada! Hello, Ada!"},
    )


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"type": "Bad Type"}, "type must be dotted lower-case words"),
        ({"type": "x" * 101}, "type must be dotted lower-case words"),
        ({"config_type": dict}, "config_type must be a msgspec.Struct class"),
        ({"run": lambda self, context, config: {}}, "run must be an async method"),
        ({"input_types": "image/png"}, "input_types must be content types"),
        ({"timeout_seconds": 0}, "timeout_seconds must be a positive number"),
        ({"backoff_seconds": "2"}, "backoff_seconds must be a positive number"),
        ({"max_attempts": 0}, "max_attempts must be a whole number from 1 to 20"),
        ({"max_attempts": 2.5}, "max_attempts must be a whole number from 1 to 20"),
    ],
)
def test_a_handler_that_does_not_fit_is_refused_by_name(
    attributes: dict[str, Any], message: str
) -> None:
    [greet] = guide_handlers()
    broken = type("Broken", (type(greet),), attributes)()
    with pytest.raises(HandlerError, match=message) as refused:
        Registry([broken])
    assert "Broken" in str(refused.value)


class Sleepy(Scripted):
    """Scripted, and "sleep" sleeps for a second, "own-timeout" raises its own TimeoutError."""

    type = "sleepy"
    timeout_seconds = 0.05
    max_attempts = 1

    async def run(self, context: TaskContext, config: Config) -> dict[str, Any]:
        if config.fail == "sleep":
            await asyncio.sleep(1)
        if config.fail == "own-timeout":
            raise TimeoutError("the upstream service did not answer")
        return await super().run(context, config)


class Patient(Scripted):
    type = "patient"
    max_attempts = 5
    backoff_seconds = 7.5


async def run_once(handler: Scripted, fail: str) -> tuple[Any, Any]:
    """One attempt of a ``handler`` task whose config says ``fail``: what the runner returned
    (the retry's delay, if any) and the task as the attempt left it."""
    world, registry = World(), Registry([handler])
    tenant_of(world)
    task = await SubmitTask(world.uow, FakeJobQueue(), registry, TaskLimits())(
        ACTOR, task_type=handler.type, config={"fail": fail}, input_files=[], request_id=None
    )
    retry = await runner(world, attempts=3, registry=registry)(ACTOR.tenant_id, task.id)
    return retry, world.uow.committed.tasks[task.id]


async def test_a_types_policy_limits_its_attempts_time_and_retries() -> None:
    retry, task = await run_once(Sleepy(), "sleep")
    assert (task.status, task.error_message) == (
        TaskStatus.FAILED,
        "The task ran longer than its 0.05 seconds.",
    )
    assert retry is None
    # A TimeoutError of the handler's own is its failure, in its words.
    _, task = await run_once(Sleepy(), "own-timeout")
    assert task.error_message == "the upstream service did not answer"
    # One attempt for this type, whatever TENANTRY_TASK_MAX_ATTEMPTS says (3 here).
    retry, task = await run_once(Sleepy(), "transient")
    assert (retry, task.status) == (None, TaskStatus.FAILED)
    retry, task = await run_once(Patient(), "transient")
    assert (retry, task.status) == (timedelta(seconds=7.5), TaskStatus.PENDING)
    # Without a policy of its own, the worker's: backoff 1 s (runner's default here).
    retry, _ = await run_once(Scripted(), "transient")
    assert retry is not None
    assert retry != timedelta(seconds=7.5)


async def test_a_tenant_past_its_pending_limit_is_told_to_wait() -> None:
    world, queue = World(), FakeJobQueue()
    tenant_of(world)
    registry = Registry([Noop()])

    async def submit(limits: TaskLimits) -> Any:
        return await SubmitTask(world.uow, queue, registry, limits)(
            ACTOR, task_type="noop", config={}, input_files=[], request_id=None
        )

    for _ in range(2):
        await submit(TaskLimits(pending=2))
    with pytest.raises(TooManyPendingTasks) as refused:
        await submit(TaskLimits(pending=2))
    assert refused.value.retry_after > 0
    assert refused.value.fields == {"task_limits.pending": "at most 2"}
    assert len(queue.enqueued) == 2
    # The tenant's own setting overrides the platform's default, either way.
    tenant = world.uow.committed.tenants[ACTOR.tenant_id]
    world.uow.committed.tenants[ACTOR.tenant_id] = msgspec.structs.replace(
        tenant, settings={"task_limits": {"pending": 3}}
    )
    await submit(TaskLimits(pending=2, running=4))
    # The queue gets the tenant's running limit with each task: the default here, 0 for none.
    assert queue.running_limits[-2:] == [0, 4]
    with pytest.raises(TooManyPendingTasks):
        await submit(TaskLimits())
    with pytest.raises(Invalid) as invalid:
        TaskLimits.of({"pending": 0})
    assert "settings.task_limits" in invalid.value.fields

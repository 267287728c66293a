from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from uuid import uuid4

import msgspec
import pytest

from tenantry.application.tasks import CancelTask, Noop, Registry, RunTask, SubmitTask, TaskContext
from tenantry.domain.auth import Actor
from tenantry.domain.errors import Invalid
from tenantry.domain.files import PNG, FilePolicy
from tenantry.domain.ports import TaskMetrics
from tenantry.domain.tasks import RetryableError, TaskFinished, TaskStatus
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
        if config.fail == "cancel":
            await context.check_cancelled()
        return {"done": True}


def runner(
    world: World,
    attempts: int = 3,
    *,
    registry: Registry | None = None,
    metrics: TaskMetrics | None = None,
) -> RunTask:
    @asynccontextmanager
    async def units() -> AsyncIterator[FakeUnitOfWork]:
        async with world.uow as uow:
            yield uow

    return RunTask(
        units=units,
        registry=registry or Registry([Scripted(), Noop()]),
        storage=FakeStorage(),
        clock=world.clock,
        file_policy=POLICY,
        max_attempts=attempts,
        backoff=timedelta(seconds=2),
        heartbeat=timedelta(seconds=60),
        metrics=metrics,
    )


async def submitted(world: World, queue: FakeJobQueue, fail: str = "") -> Any:
    submit = SubmitTask(world.uow, queue, Registry([Scripted(), Noop()]))
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
            await SubmitTask(world.uow, queue, Registry([Scripted()]))(
                ACTOR, task_type=bad["type"], config=bad["config"], input_files=[], request_id=None
            )
    with pytest.raises(Invalid):
        await SubmitTask(world.uow, queue, Registry([Scripted()]))(
            ACTOR, task_type="scripted", config={}, input_files=[uuid4()], request_id=None
        )
    assert queue.enqueued == [task.id]


async def test_a_run_completes_with_progress_and_a_log() -> None:
    world, queue = World(), FakeJobQueue()
    task = await submitted(world, queue)
    assert await runner(world)(ACTOR.tenant_id, task.id, 1) is None
    done = world.uow.committed.tasks[task.id]
    assert (done.status, done.progress, done.result) == (TaskStatus.COMPLETED, 100, {"done": True})
    assert [(log.attempt, log.success) for log in world.uow.committed.task_logs] == [(1, True)]


async def test_transient_failures_back_off_then_fail() -> None:
    world, queue = World(), FakeJobQueue()
    task = await submitted(world, queue, fail="transient")
    run = runner(world, attempts=3)
    assert await run(ACTOR.tenant_id, task.id, 1) == timedelta(seconds=2)
    assert world.uow.committed.tasks[task.id].status == TaskStatus.PENDING
    assert await run(ACTOR.tenant_id, task.id, 2) == timedelta(seconds=4)
    assert await run(ACTOR.tenant_id, task.id, 3) is None
    failed = world.uow.committed.tasks[task.id]
    assert (failed.status, failed.error_message, failed.retry_count) == (
        TaskStatus.FAILED,
        "try later",
        2,
    )
    assert failed.progress == 50


async def test_permanent_failures_fail_at_once() -> None:
    world, queue = World(), FakeJobQueue()
    task = await submitted(world, queue, fail="permanent")
    assert await runner(world)(ACTOR.tenant_id, task.id, 1) is None
    assert world.uow.committed.tasks[task.id].status == TaskStatus.FAILED


async def test_cancellation_before_and_during_a_run() -> None:
    world, queue = World(), FakeJobQueue()
    pending = await submitted(world, queue)
    await CancelTask(world.uow, world.clock)(ACTOR, pending.id)
    assert await runner(world)(ACTOR.tenant_id, pending.id, 1) is None
    assert world.uow.committed.task_logs == []  # a cancelled task never starts
    with pytest.raises(TaskFinished):
        await CancelTask(world.uow, world.clock)(ACTOR, pending.id)

    # Its worker died after the cancel was asked for: the redelivery ends it, not runs it.
    orphaned = await submitted(world, queue, fail="cancel")
    world.uow.committed.tasks[orphaned.id] = msgspec.structs.replace(
        world.uow.committed.tasks[orphaned.id], status=TaskStatus.PROCESSING, cancel_requested=True
    )
    assert await runner(world)(ACTOR.tenant_id, orphaned.id, 2) is None
    assert world.uow.committed.tasks[orphaned.id].status == TaskStatus.CANCELLED


async def test_a_redelivered_finished_task_does_not_run_again() -> None:
    world, queue = World(), FakeJobQueue()
    task = await submitted(world, queue)
    await runner(world)(ACTOR.tenant_id, task.id, 1)
    await runner(world)(ACTOR.tenant_id, task.id, 2)
    assert len(world.uow.committed.task_logs) == 1

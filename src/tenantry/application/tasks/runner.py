"""One attempt at a task, in a worker: start it in its row, run its handler, record the end.

An attempt costs two transactions of one statement each, start and end; while the handler
runs, its progress and a heartbeat are written at most every PROGRESS_INTERVAL_S and every
``heartbeat`` (``Pulse``). The end that finishes the task (and a start that ends it instead
of running it) also appends the task's audit event, a system change: one statement more
per task, none per attempt that a retry follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from uuid import UUID

import msgspec

from tenantry.application.audit import record, snapshot
from tenantry.application.tasks import (
    SHOWN,
    Registry,
    TaskContext,
    TaskPolicy,
    UnitOfWorkFactory,
)
from tenantry.application.usage import NoUsage
from tenantry.domain.errors import Unavailable
from tenantry.domain.files import FilePolicy, ObjectStorage
from tenantry.domain.ports import Clock, UnitOfWork
from tenantry.domain.tasks import (
    AttemptEnd,
    RetryableError,
    Task,
    TaskCancelled,
    TaskMetrics,
    TaskRepository,
    TaskStatus,
)
from tenantry.domain.usage import UsageMeter

# Progress reaches the row at most this often (and with the attempt's end).
PROGRESS_INTERVAL_S = 0.25
# What a task's users read of an attempt that failed for want of a service (the database
# lost, the object store down): the cause names servers, which they are not told.
SERVICE_UNAVAILABLE = "A service the task needs was unavailable."

# The trail's action for a task its worker finished: by its handler's outcome, or by a start
# that ended it instead of running it (its tenant suspended, its cancellation asked for, or
# its attempts spent by workers that died: reaped).
FINISHED_BY_HANDLER = {
    TaskStatus.COMPLETED: "task.succeeded",
    TaskStatus.FAILED: "task.failed",
    TaskStatus.CANCELLED: "task.stopped",
}
FINISHED_AT_START = {TaskStatus.FAILED: "task.reaped", TaskStatus.CANCELLED: "task.stopped"}


async def record_finished(uow: UnitOfWork, action: str, task: Task, **more: int) -> None:
    """The system's event of a task it finished, in ``uow``'s transaction."""
    await record(
        uow,
        None,
        action,
        ("task", task.id),
        tenant_id=task.tenant_id,
        changes={"after": snapshot(task, SHOWN), **more},
    )


class NoTaskMetrics:
    """Records nothing: for a RunTask that no dashboard watches."""

    def started(self, task_type: str) -> None:
        pass

    def succeeded(self, task_type: str, seconds: float) -> None:
        pass

    def failed(self, task_type: str, seconds: float) -> None:
        pass

    def retried(self, task_type: str, seconds: float) -> None:
        pass

    def cancelled(self, task_type: str, seconds: float) -> None:
        pass


class RunTask:
    """One attempt at a task, in a worker. Returns the delay before a retry, or None."""

    def __init__(
        self,
        *,
        units: UnitOfWorkFactory,
        registry: Registry,
        storage: ObjectStorage,
        clock: Clock,
        file_policy: FilePolicy,
        max_attempts: int,
        backoff: timedelta,
        heartbeat: timedelta,
        metrics: TaskMetrics | None = None,
        usage: UsageMeter | None = None,
    ) -> None:
        self.units = units
        self.registry = registry
        self.storage = storage
        self.clock = clock
        self.file_policy = file_policy
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.heartbeat = heartbeat
        self.metrics: TaskMetrics = metrics or NoTaskMetrics()
        self.usage: UsageMeter = usage or NoUsage()

    async def __call__(self, tenant_id: UUID, task_id: UUID) -> timedelta | None:
        async with self.units() as uow:
            # Suspension ends what was queued (start cancels it); re-activation runs nothing
            # by itself.
            task = await uow.repository(TaskRepository, tenant_id).start(
                task_id, at=self.clock.now(), max_attempts=self.max_attempts
            )
            if task is not None and task.status in FINISHED_AT_START:
                await record_finished(uow, FINISHED_AT_START[task.status], task)
            await uow.commit()
        if task is None or task.status != TaskStatus.PROCESSING:
            return None  # finished, cancelled or gone: at-least-once delivery, run at most once
        # The row's count, not the queue's: a re-enqueued job starts again at arq's job_try 1.
        attempt = task.retry_count + 1
        self.metrics.started(task.type)
        started = time.perf_counter()
        context = TaskContext(
            task,
            units=self.units,
            storage=self.storage,
            clock=self.clock,
            file_policy=self.file_policy,
        )
        status, result, error = TaskStatus.COMPLETED, None, None
        retry: timedelta | None = None
        pulse = Pulse(self.units, context, every=self.heartbeat)
        policy = TaskPolicy()
        limit: asyncio.Timeout | None = None
        try:
            handler, policy = self.registry.handler(task.type), self.registry.policy(task.type)
            async with asyncio.timeout(policy.timeout_seconds) as limit:
                result = await handler.run(context, self.registry.config(task.type, task.config))
        except TaskCancelled as cancelled:
            status, error = TaskStatus.CANCELLED, str(cancelled) or None
        except (RetryableError, Unavailable) as failure:
            # A service out of reach is as passing as the handler's own RetryableError.
            unavailable = isinstance(failure, Unavailable)
            error = SERVICE_UNAVAILABLE if unavailable else str(failure) or type(failure).__name__
            status = TaskStatus.FAILED
            if attempt < (policy.max_attempts or self.max_attempts):
                backoff = (
                    self.backoff
                    if policy.backoff_seconds is None
                    else timedelta(seconds=policy.backoff_seconds)
                )
                retry = backoff * 2 ** (attempt - 1)
        except Exception as failure:  # noqa: BLE001 - any other failure is permanent: record it
            status, error = TaskStatus.FAILED, str(failure) or type(failure).__name__
            # The type's time limit, not a TimeoutError of the handler's own.
            if isinstance(failure, TimeoutError) and limit is not None and limit.expired():
                error = f"The task ran longer than its {policy.timeout_seconds:g} seconds."
        finally:
            await pulse.stop()
        seconds = time.perf_counter() - started
        self._record(task.type, status, retry, seconds)
        self.usage.task_ran(tenant_id, task.type, seconds)
        end = AttemptEnd(
            attempt=attempt,
            operation=task.type,
            duration_ms=round(seconds * 1000, 2),
            status=TaskStatus.PENDING if retry is not None else status,
            at=self.clock.now(),
            progress=context.reported,
            result=result,
            error=error,
            output_files=context.output_files,
        )
        async with self.units() as uow:
            ended = await uow.repository(TaskRepository, tenant_id).end(task_id, end)
            # Only when this end finished the task: one that a retry follows, or that found
            # the task already finished (by the reaper, say), has no event.
            if ended and retry is None:
                finished = msgspec.structs.replace(task, status=status)
                await record_finished(uow, FINISHED_BY_HANDLER[status], finished, attempts=attempt)
            await uow.commit()
        return retry

    def _record(
        self, task_type: str, status: TaskStatus, retry: timedelta | None, seconds: float
    ) -> None:
        if retry is not None:
            self.metrics.retried(task_type, seconds)
        elif status == TaskStatus.COMPLETED:
            self.metrics.succeeded(task_type, seconds)
        elif status == TaskStatus.CANCELLED:
            self.metrics.cancelled(task_type, seconds)
        else:
            self.metrics.failed(task_type, seconds)


class Pulse:
    """An attempt's writes while its handler runs, each also a heartbeat for the reaper: the
    progress the handler reported, at most every PROGRESS_INTERVAL_S, and a bare heartbeat
    after ``every`` without one. A handler that is quick and quiet costs no write at all: its
    last progress goes with the attempt's end."""

    def __init__(self, units: UnitOfWorkFactory, context: TaskContext, *, every: timedelta) -> None:
        self.units = units
        self.context = context
        self.every = every.total_seconds()
        self.written = context.task.progress
        self.writing = False
        self.stopping = False
        self.beating = asyncio.create_task(self._beat())

    async def stop(self) -> None:
        """Stop beating; a write under way is let finish, not cut off mid-transaction."""
        self.stopping = True
        if not self.writing:
            self.beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.beating

    async def _beat(self) -> None:
        context = self.context
        while not self.stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.every):
                    await context.reports.wait()
                    # What the handler reports meanwhile goes in the same write.
                    await asyncio.sleep(PROGRESS_INTERVAL_S)
            context.reports.clear()
            self.writing = True
            try:
                # A failed write is retried at the next beat; the reaper waits for 3 missed.
                with contextlib.suppress(Exception):
                    await self._write(context.reported)
            finally:
                self.writing = False

    async def _write(self, reported: int) -> None:
        async with self.units() as uow:
            tasks = uow.repository(TaskRepository, self.context.tenant_id)
            if reported > self.written:
                await tasks.progress(self.context.task.id, reported)
            else:
                await tasks.heartbeat(self.context.task.id)
            await uow.commit()
        self.written = max(self.written, reported)

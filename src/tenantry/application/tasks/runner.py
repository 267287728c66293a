"""One attempt at a task, in a worker: start it in its row, run its handler, record the end.

An attempt costs two transactions of one statement each, start and end; while the handler
runs, its progress and a heartbeat are written at most every PROGRESS_INTERVAL_S and every
``heartbeat`` (``Pulse``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from uuid import UUID

from tenantry.application.tasks import Registry, TaskContext, UnitOfWorkFactory
from tenantry.domain.files import FilePolicy, ObjectStorage
from tenantry.domain.ports import Clock
from tenantry.domain.tasks import (
    AttemptEnd,
    RetryableError,
    TaskCancelled,
    TaskMetrics,
    TaskRepository,
    TaskStatus,
)

# Progress reaches the row at most this often (and with the attempt's end).
PROGRESS_INTERVAL_S = 0.25


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

    async def __call__(self, tenant_id: UUID, task_id: UUID) -> timedelta | None:
        async with self.units() as uow:
            # Suspension ends what was queued (start cancels it); re-activation runs nothing
            # by itself.
            task = await uow.repository(TaskRepository, tenant_id).start(
                task_id, at=self.clock.now(), max_attempts=self.max_attempts
            )
            await uow.commit()
        if task is None:
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
        try:
            handler = self.registry.handler(task.type)
            result = await handler.run(context, self.registry.config(task.type, task.config))
        except TaskCancelled as cancelled:
            status, error = TaskStatus.CANCELLED, str(cancelled) or None
        except RetryableError as failure:
            error = str(failure) or type(failure).__name__
            status = TaskStatus.FAILED
            if attempt < self.max_attempts:
                retry = self.backoff * 2 ** (attempt - 1)
        except Exception as failure:  # noqa: BLE001 - any other failure is permanent: record it
            status, error = TaskStatus.FAILED, str(failure) or type(failure).__name__
        finally:
            await pulse.stop()
        seconds = time.perf_counter() - started
        self._record(task.type, status, retry, seconds)
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
            await uow.repository(TaskRepository, tenant_id).end(task_id, end)
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

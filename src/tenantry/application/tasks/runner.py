"""One attempt at a task, in a worker: start it in its row, run its handler, record the end."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from uuid import UUID

from tenantry.application.tasks import (
    Registry,
    TaskContext,
    UnitOfWorkFactory,
    runs_tasks,
)
from tenantry.domain.files import FilePolicy, ObjectStorage
from tenantry.domain.ports import Clock
from tenantry.domain.tasks import (
    TENANT_SUSPENDED,
    RetryableError,
    TaskCancelled,
    TaskMetrics,
    TaskRepository,
    TaskStatus,
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
            tasks = uow.repository(TaskRepository, tenant_id)
            if runs_tasks(await uow.tenants.get(tenant_id)):
                task = await tasks.start(
                    task_id, at=self.clock.now(), max_attempts=self.max_attempts
                )
            else:
                # Suspension ends what was queued; re-activation runs nothing by itself.
                await tasks.finish(
                    task_id,
                    TaskStatus.CANCELLED,
                    at=self.clock.now(),
                    error_message=TENANT_SUSPENDED,
                )
                task = None
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
        beating = asyncio.create_task(self._beat(tenant_id, task_id))
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
            beating.cancel()
        seconds = time.perf_counter() - started
        self._record(task.type, status, retry, seconds)
        duration_ms = round(seconds * 1000, 2)
        async with self.units() as uow:
            tasks = uow.repository(TaskRepository, tenant_id)
            await tasks.add_log(
                task_id,
                attempt=attempt,
                operation=task.type,
                success=status == TaskStatus.COMPLETED,
                duration_ms=duration_ms,
                error=error,
            )
            if retry is not None:
                await tasks.back_to_pending(task_id, error_message=error or "retrying")
            else:
                await tasks.finish(
                    task_id,
                    status,
                    at=self.clock.now(),
                    result=result,
                    error_message=error,
                    output_files=context.output_files,
                )
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

    async def _beat(self, tenant_id: UUID, task_id: UUID) -> None:
        """Tell the reaper this attempt is alive, however long the handler goes quiet."""
        while True:
            await asyncio.sleep(self.heartbeat.total_seconds())
            async with self.units() as uow:
                await uow.repository(TaskRepository, tenant_id).heartbeat(task_id)
                await uow.commit()

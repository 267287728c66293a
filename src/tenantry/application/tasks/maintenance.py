"""The platform's task sweeps: stranded tasks back to the queue, lost enqueues enqueued."""

from __future__ import annotations

from datetime import timedelta

from tenantry.application.tasks import (
    UnitOfWorkFactory,
)
from tenantry.domain.ports import Clock
from tenantry.domain.projects import ListQuery
from tenantry.domain.tasks import (
    WORKER_LOST,
    JobQueue,
    TaskStatus,
)


class ReapTasks:
    """Tasks stranded in processing by a dead worker go back to the queue, or fail once their
    attempts are spent: nothing stays in processing forever."""

    def __init__(
        self,
        *,
        units: UnitOfWorkFactory,
        queue: JobQueue,
        clock: Clock,
        stale_after: timedelta,
        max_attempts: int,
    ) -> None:
        self.units = units
        self.queue = queue
        self.clock = clock
        self.stale_after = stale_after
        self.max_attempts = max_attempts

    async def __call__(self, batch: int = 500) -> int:
        reaped, offset, requeue = 0, 0, []
        now = self.clock.now()
        async with self.units() as uow:
            while True:
                tenants, total = await uow.tenants.list(limit=batch, offset=offset)
                for tenant in tenants:
                    tasks = uow.tasks(tenant.id)
                    for task in await tasks.stale(now - self.stale_after, limit=batch):
                        if task.retry_count + 1 >= self.max_attempts:
                            await tasks.finish(
                                task.id, TaskStatus.FAILED, at=now, error_message=WORKER_LOST
                            )
                        else:
                            await tasks.back_to_pending(task.id, error_message="worker lost")
                            requeue.append(task)
                        reaped += 1
                    await uow.commit()
                offset += batch
                if offset >= total:
                    break
        for task in requeue:
            await self.queue.enqueue(task, request_id=None)
        return reaped


class ReconcileTasks:
    """Enqueue pending tasks that no queue seems to hold: the other half of "enqueue after
    commit". A task whose enqueue was lost (a crash, Redis down) still runs."""

    def __init__(
        self, *, units: UnitOfWorkFactory, queue: JobQueue, clock: Clock, stale_after: timedelta
    ) -> None:
        self.units = units
        self.queue = queue
        self.clock = clock
        self.stale_after = stale_after

    async def __call__(self, batch: int = 500) -> int:
        enqueued, offset = 0, 0
        cutoff = self.clock.now() - self.stale_after
        async with self.units() as uow:
            while True:
                tenants, total = await uow.tenants.list(limit=batch, offset=offset)
                for tenant in tenants:
                    query = ListQuery(limit=100, order_by="created_at", created_before=cutoff)
                    stale, _ = await uow.tasks(tenant.id).list(
                        query, status=TaskStatus.PENDING, task_type=None
                    )
                    for task in stale:
                        await self.queue.enqueue(task, request_id=None)
                        enqueued += 1
                offset += batch
                if offset >= total:
                    return enqueued

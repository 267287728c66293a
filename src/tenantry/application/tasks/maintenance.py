"""The platform's task sweeps: stranded tasks back to the queue, lost enqueues enqueued."""

from __future__ import annotations

from datetime import timedelta

from tenantry.application.tasks import UnitOfWorkFactory
from tenantry.application.tasks.runner import record_finished
from tenantry.domain.ports import Clock
from tenantry.domain.tasks import JobQueue, TaskStatus, TaskSweeps


class ReapTasks:
    """Tasks stranded in processing by a dead worker go back to the queue, or fail once their
    attempts are spent: nothing stays in processing forever. A task failed so is the system's
    change, on its tenant's audit trail (``task.reaped``) in the reap's own transaction."""

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

    async def __call__(self, per_tenant: int = 500) -> int:
        async with self.units() as uow:
            reaped = await uow.platform(TaskSweeps).reap(
                self.clock.now() - self.stale_after,
                max_attempts=self.max_attempts,
                per_tenant=per_tenant,
            )
            for task in reaped:
                if task.status == TaskStatus.FAILED:
                    await record_finished(uow, "task.reaped", task)
            await uow.commit()
        # Enqueued once committed: a worker must find the task pending.
        for task in reaped:
            if task.status == TaskStatus.PENDING:
                await self.queue.enqueue(task, request_id=None)
        return len(reaped)


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

    async def __call__(self, per_tenant: int = 100) -> int:
        async with self.units() as uow:
            stale = await uow.platform(TaskSweeps).stale_pending(
                self.clock.now() - self.stale_after, per_tenant=per_tenant
            )
        for task in stale:
            await self.queue.enqueue(task, request_id=None)
        return len(stale)

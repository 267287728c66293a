"""The platform's task sweeps: stranded tasks back to the queue, lost enqueues enqueued."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from tenantry.application.tasks import UnitOfWorkFactory
from tenantry.application.tasks.runner import record_finished
from tenantry.domain.ports import Clock
from tenantry.domain.tasks import JobQueue, TaskRepository, TaskStatus, TaskSweeps


class ReapTasks:
    """Tasks stranded in processing by a dead worker go back to the queue, or fail once their
    attempts are spent: nothing stays in processing forever. The platform's sweep finds them;
    each tenant's are then taken back in a transaction of that tenant's, where a task failed
    so is the system's change, on its tenant's audit trail (``task.reaped``). One tenant's
    transaction at a time: on a distributed database, each runs on the one node holding it."""

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
        stale_before = self.clock.now() - self.stale_after
        async with self.units() as uow:
            stranded = await uow.platform(TaskSweeps).stranded(stale_before, per_tenant=per_tenant)
        by_tenant: dict[UUID, list[UUID]] = {}
        for tenant_id, task_id in stranded:
            by_tenant.setdefault(tenant_id, []).append(task_id)
        count = 0
        for tenant_id, task_ids in by_tenant.items():
            async with self.units() as uow:
                reaped = await uow.repository(TaskRepository, tenant_id).reap(
                    task_ids,
                    stale_before=stale_before,
                    max_attempts=self.max_attempts,
                    at=self.clock.now(),
                )
                for task in reaped:
                    if task.status == TaskStatus.FAILED:
                        await record_finished(uow, "task.reaped", task)
                await uow.commit()
            # Enqueued once committed: a worker must find the task pending.
            for task in reaped:
                if task.status == TaskStatus.PENDING:
                    await self.queue.enqueue(task, request_id=None)
            count += len(reaped)
        return count


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

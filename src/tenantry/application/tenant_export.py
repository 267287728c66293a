"""Tenant export: the owner asks for every row and live file of the tenant as one archive; a
task (``tasks/handlers/tenant_export.py``) writes it and stores it as a file of the tenant.

Only owners may ask: the archive holds every user, key name and audit event of the tenant.
"""

from __future__ import annotations

from tenantry.application.audit import record
from tenantry.application.tasks import Registry, SubmitTask
from tenantry.domain.auth import Actor
from tenantry.domain.errors import Forbidden
from tenantry.domain.ports import UnitOfWork
from tenantry.domain.tasks import JobQueue, Task, TaskLimits
from tenantry.domain.tenant_export import TASK_TYPE
from tenantry.domain.users import Role

EXPORT_REQUESTED = "tenant.export_requested"


def require_owner(actor: Actor) -> None:
    if Role.OWNER not in actor.roles:
        raise Forbidden("Only the tenant's owners may export it.")


class RequestTenantExport:
    """Start the export task of the caller's tenant; its request is on the trail with the task
    it started (the task's own events follow from the task feature)."""

    def __init__(
        self, uow: UnitOfWork, queue: JobQueue, registry: Registry, limits: TaskLimits
    ) -> None:
        self.uow = uow
        self.tasks = SubmitTask(uow, queue, registry, limits)

    async def __call__(self, actor: Actor, *, request_id: str | None) -> Task:
        require_owner(actor)
        async with self.uow:
            task = await self.tasks.add(actor, task_type=TASK_TYPE, config={}, input_files=[])
            await record(
                self.uow,
                actor,
                EXPORT_REQUESTED,
                ("tenant", actor.tenant_id),
                changes={"after": {"task_id": str(task.id)}},
            )
            await self.uow.commit()
        await self.tasks.enqueue(task, request_id=request_id)
        return task

"""The task sweeps across tenants: each one call of a function that migration 0009_task_sweeps
made, owned by the maintenance role and executable by the app role alone (docs/operations.md,
"Tenancy: the database role")."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec
from sqlalchemy import FunctionElement, column, func, select

from tenantry.domain.tasks import Task, TaskSweeps
from tenantry.infrastructure.db.repository import PlatformRows
from tenantry.infrastructure.db.tasks import TaskModel

# The functions return whole task rows; these are the columns a Task is made of, typed as the
# model types them.
_TASK_COLUMNS = [
    column(c.name, c.type) for c in TaskModel.__table__.c if c.name in Task.__struct_fields__
]


class SqlTaskSweeps(PlatformRows):
    """The sweeps in the unit of work's transaction (no tenant's): what the caller records of
    them commits with them (``uow.platform(TaskSweeps)``)."""

    port = TaskSweeps

    async def reap(
        self, stale_before: datetime, *, max_attempts: int, per_tenant: int
    ) -> Sequence[Task]:
        return await self._tasks(func.tenantry_reap_tasks(stale_before, max_attempts, per_tenant))

    async def stale_pending(self, created_before: datetime, *, per_tenant: int) -> Sequence[Task]:
        return await self._tasks(func.tenantry_stale_pending_tasks(created_before, per_tenant))

    async def _tasks(self, call: FunctionElement[object]) -> list[Task]:
        rows = await self.session.execute(select(call.table_valued(*_TASK_COLUMNS)))
        return [msgspec.convert(row, Task, from_attributes=True) for row in rows]

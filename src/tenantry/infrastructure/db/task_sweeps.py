"""The task sweeps across tenants: each one call of a function that migration 0009_task_sweeps
made, owned by the maintenance role and executable by the app role alone (docs/operations.md,
"Tenancy: the database role")."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec
from sqlalchemy import FunctionElement, column, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tenantry.domain.tasks import Task
from tenantry.infrastructure.db.tasks import TaskModel

# The functions return whole task rows; these are the columns a Task is made of, typed as the
# model types them.
_TASK_COLUMNS = [
    column(c.name, c.type) for c in TaskModel.__table__.c if c.name in Task.__struct_fields__
]


class SqlTaskSweeps:
    """Each sweep runs in a transaction of its own, committed before it returns: the caller
    enqueues what it returned only once the rows say so."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def reap(
        self, stale_before: datetime, *, max_attempts: int, per_tenant: int
    ) -> Sequence[Task]:
        return await self._tasks(func.tenantry_reap_tasks(stale_before, max_attempts, per_tenant))

    async def stale_pending(self, created_before: datetime, *, per_tenant: int) -> Sequence[Task]:
        return await self._tasks(func.tenantry_stale_pending_tasks(created_before, per_tenant))

    async def _tasks(self, call: FunctionElement[object]) -> list[Task]:
        async with self.engine.begin() as connection:
            rows = await connection.execute(select(call.table_valued(*_TASK_COLUMNS)))
            return [msgspec.convert(row, Task, from_attributes=True) for row in rows]

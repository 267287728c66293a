"""The task sweeps across tenants: each one call of a function of migrations 0009_task_sweeps
and 0021_routed_sweeps, owned by the maintenance role and executable by the app role alone
(docs/operations.md, "Tenancy: the database role")."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import msgspec
from sqlalchemy import FunctionElement, column, func, select
from sqlalchemy.dialects.postgresql import UUID as PG_UUID

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

    async def stranded(
        self, stale_before: datetime, *, per_tenant: int
    ) -> Sequence[tuple[UUID, UUID]]:
        call = func.tenantry_stranded_tasks(stale_before, per_tenant).table_valued(
            column("tenant_id", PG_UUID), column("id", PG_UUID)
        )
        rows = await self.session.execute(select(call))
        return [(row.tenant_id, row.id) for row in rows]

    async def stale_pending(self, created_before: datetime, *, per_tenant: int) -> Sequence[Task]:
        return await self._tasks(func.tenantry_stale_pending_tasks(created_before, per_tenant))

    async def _tasks(self, call: FunctionElement[object]) -> list[Task]:
        rows = await self.session.execute(select(call.table_valued(*_TASK_COLUMNS)))
        return [msgspec.convert(row, Task, from_attributes=True) for row in rows]

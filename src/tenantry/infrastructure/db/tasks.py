"""Task rows: status changes are conditional UPDATEs, so concurrent workers agree."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import and_, case, func, or_, select

from tenantry.domain.projects import ListQuery
from tenantry.domain.tasks import FINISHED, WORKER_LOST, Task, TaskLog, TaskStats, TaskStatus
from tenantry.infrastructure.db.listing import list_filters
from tenantry.infrastructure.db.models import TaskLogModel, TaskModel
from tenantry.infrastructure.db.tenancy import TenantScopedRepository


class TaskModelRepository(TenantScopedRepository[TaskModel]):
    model_type = TaskModel


class TaskLogModelRepository(TenantScopedRepository[TaskLogModel]):
    model_type = TaskLogModel


def to_task(row: TaskModel) -> Task:
    return Task(
        id=row.id,
        tenant_id=row.tenant_id,
        type=row.type,
        status=TaskStatus(row.status),
        progress=row.progress,
        input_files=list(row.input_files),
        output_files=list(row.output_files),
        config=dict(row.config),
        result=row.result,
        error_message=row.error_message,
        retry_count=row.retry_count,
        created_by=row.created_by,
        cancel_requested=row.cancel_requested,
        created_at=row.created_at,
        updated_at=row.updated_at,
        completed_at=row.completed_at,
    )


class SqlTaskRepository:
    def __init__(self, tasks: TaskModelRepository, logs: TaskLogModelRepository) -> None:
        self.tasks = tasks
        self.logs_repository = logs
        self.session = tasks.session
        self.tenant_id = tasks.tenant_id

    def _update(self, task_id: UUID) -> Any:
        return self.tasks.update_rows().where(TaskModel.id == task_id)

    async def add(
        self,
        *,
        task_id: UUID,
        task_type: str,
        config: dict[str, Any],
        input_files: Sequence[UUID],
        created_by: UUID | None,
    ) -> Task:
        row = await self.tasks.add(
            TaskModel(
                id=task_id,
                type=task_type,
                status=TaskStatus.PENDING.value,
                progress=0,
                config=config,
                input_files=list(input_files),
                output_files=[],
                retry_count=0,
                created_by=created_by,
                cancel_requested=False,
            )
        )
        return to_task(row)

    async def get(self, task_id: UUID) -> Task | None:
        row = await self.tasks.get_one_or_none(id=task_id)
        return None if row is None else to_task(row)

    async def list(
        self, query: ListQuery, *, status: TaskStatus | None, task_type: str | None
    ) -> tuple[Sequence[Task], int]:
        filters: dict[str, Any] = {}
        if status is not None:
            filters["status"] = status.value
        if task_type is not None:
            filters["type"] = task_type
        rows, total = await self.tasks.get_many_and_count(
            *list_filters(query, search_field="type"), **filters
        )
        return [to_task(row) for row in rows], total

    async def start(self, task_id: UUID, *, at: datetime, max_attempts: int) -> Task | None:
        runnable = TaskModel.status.in_([TaskStatus.PENDING.value, TaskStatus.PROCESSING.value])
        cancelled = TaskModel.cancel_requested.is_(True)
        # Only the first start finds started_at empty; every later one is another attempt,
        # whether the last asked for a retry or died with its worker (then the queue's own
        # count starts again at 1 and cannot be trusted).
        first = TaskModel.started_at.is_(None)
        spent = and_(~first, TaskModel.retry_count + 1 >= max_attempts)
        statement = (
            self._update(task_id)
            .where(runnable, ~cancelled, ~spent)
            .values(
                status=TaskStatus.PROCESSING.value,
                retry_count=case((first, 0), else_=TaskModel.retry_count + 1),
                started_at=at,
                heartbeat_at=at,
                updated_at=func.now(),
            )
            .returning(TaskModel)
            .execution_options(synchronize_session=False, populate_existing=True)
        )
        row = (await self.session.execute(statement)).scalar_one_or_none()
        if row is None:
            # Cancelled while queued or while its worker died, or its last attempt died with
            # its worker: end it here, not run it.
            await self.session.execute(
                self._update(task_id)
                .where(runnable, or_(cancelled, spent))
                .values(
                    status=case(
                        (cancelled, TaskStatus.CANCELLED.value), else_=TaskStatus.FAILED.value
                    ),
                    error_message=case((cancelled, TaskModel.error_message), else_=WORKER_LOST),
                    completed_at=at,
                    updated_at=func.now(),
                )
            )
        return None if row is None else to_task(row)

    async def progress(self, task_id: UUID, percent: int) -> None:
        await self.session.execute(
            self._update(task_id)
            .where(TaskModel.progress < percent)
            .values(progress=percent, heartbeat_at=func.now(), updated_at=func.now())
        )

    async def finish(
        self,
        task_id: UUID,
        status: TaskStatus,
        *,
        at: datetime,
        result: dict[str, Any] | None = None,
        error_message: str | None = None,
        output_files: Sequence[UUID] | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "status": status.value,
            "completed_at": at,
            "result": result,
            "error_message": error_message,
            "output_files": list(output_files or []),
            "updated_at": func.now(),
        }
        if status == TaskStatus.COMPLETED:
            values["progress"] = 100
        await self.session.execute(
            self._update(task_id)
            .where(TaskModel.status.notin_([s.value for s in FINISHED]))
            .values(**values)
        )

    async def back_to_pending(self, task_id: UUID, *, error_message: str) -> None:
        await self.session.execute(
            self._update(task_id)
            .where(TaskModel.status == TaskStatus.PROCESSING.value)
            .values(
                status=TaskStatus.PENDING.value, error_message=error_message, updated_at=func.now()
            )
        )

    async def heartbeat(self, task_id: UUID) -> None:
        await self.session.execute(
            self._update(task_id)
            .where(TaskModel.status == TaskStatus.PROCESSING.value)
            .values(heartbeat_at=func.now())
        )

    async def cancel(self, task_id: UUID, at: datetime) -> Task | None:
        pending = (
            self._update(task_id)
            .where(TaskModel.status == TaskStatus.PENDING.value)
            .values(
                status=TaskStatus.CANCELLED.value,
                cancel_requested=True,
                completed_at=at,
                updated_at=func.now(),
            )
            .returning(TaskModel)
            .execution_options(synchronize_session=False, populate_existing=True)
        )
        row = (await self.session.execute(pending)).scalar_one_or_none()
        if row is None:
            running = (
                self._update(task_id)
                .where(TaskModel.status == TaskStatus.PROCESSING.value)
                .values(cancel_requested=True, updated_at=func.now())
                .returning(TaskModel)
                .execution_options(synchronize_session=False, populate_existing=True)
            )
            row = (await self.session.execute(running)).scalar_one_or_none()
        return None if row is None else to_task(row)

    async def cancel_unfinished(self, at: datetime, *, error_message: str) -> int:
        tenant_tasks = self.tasks.update_rows()
        pending = await self.session.execute(
            tenant_tasks.where(TaskModel.status == TaskStatus.PENDING.value)
            .values(
                status=TaskStatus.CANCELLED.value,
                cancel_requested=True,
                completed_at=at,
                error_message=error_message,
                updated_at=func.now(),
            )
            .execution_options(synchronize_session=False)
        )
        running = await self.session.execute(
            tenant_tasks.where(
                TaskModel.status == TaskStatus.PROCESSING.value,
                TaskModel.cancel_requested.is_(False),
            )
            .values(cancel_requested=True, updated_at=func.now())
            .execution_options(synchronize_session=False)
        )
        return int(pending.rowcount) + int(running.rowcount)  # type: ignore[attr-defined]

    async def add_log(
        self,
        task_id: UUID,
        *,
        attempt: int,
        operation: str,
        success: bool,
        duration_ms: float,
        error: str | None,
    ) -> None:
        await self.logs_repository.add(
            TaskLogModel(
                task_id=task_id,
                attempt=attempt,
                operation=operation,
                success=success,
                duration_ms=duration_ms,
                error=error,
            )
        )

    async def logs(self, task_id: UUID) -> Sequence[TaskLog]:
        rows = await self.session.scalars(
            self.logs_repository.scoped(select(TaskLogModel))
            .where(TaskLogModel.task_id == task_id)
            .order_by(TaskLogModel.created_at, TaskLogModel.attempt)
        )
        return [
            TaskLog(
                id=row.id,
                task_id=row.task_id,
                attempt=row.attempt,
                operation=row.operation,
                success=row.success,
                duration_ms=row.duration_ms,
                error=row.error,
                created_at=row.created_at,
            )
            for row in rows
        ]

    async def stats(self) -> TaskStats:
        mine = self.tasks.filters()
        by_status = dict(
            (
                await self.session.execute(
                    select(TaskModel.status, func.count()).where(*mine).group_by(TaskModel.status)
                )
            ).all()
        )
        by_type = dict(
            (
                await self.session.execute(
                    select(TaskModel.type, func.count()).where(*mine).group_by(TaskModel.type)
                )
            ).all()
        )
        duration = func.extract("epoch", TaskModel.completed_at - TaskModel.started_at) * 1000
        mean, p95 = (
            await self.session.execute(
                select(func.avg(duration), func.percentile_cont(0.95).within_group(duration)).where(
                    *mine, TaskModel.status == TaskStatus.COMPLETED.value
                )
            )
        ).one()
        return TaskStats(
            by_status={str(k): int(v) for k, v in by_status.items()},
            by_type={str(k): int(v) for k, v in by_type.items()},
            mean_duration_ms=None if mean is None else round(float(mean), 2),
            p95_duration_ms=None if p95 is None else round(float(p95), 2),
        )

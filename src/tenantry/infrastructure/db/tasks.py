"""Task rows: status changes are conditional UPDATEs, so concurrent workers agree."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import (
    Boolean,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    Update,
    Uuid,
    and_,
    case,
    func,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.domain.tasks import (
    FINISHED,
    WORKER_LOST,
    Task,
    TaskLog,
    TaskRepository,
    TaskStats,
    TaskStatus,
)
from tenantry.infrastructure.db.base import TenantOwned, creator_key
from tenantry.infrastructure.db.repository import SqlRepository


class TaskModel(TenantOwned):
    __tablename__ = "tasks"
    __table_args__ = (
        creator_key(),
        Index("ix_tasks_tenant_status", "tenant_id", "status"),
        Index("ix_tasks_tenant_created", "tenant_id", "created_at"),
    )

    type: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="pending", server_default="pending")
    progress: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    input_files: Mapped[list[UUID]] = mapped_column(ARRAY(Uuid), default=list, server_default="{}")
    output_files: Mapped[list[UUID]] = mapped_column(ARRAY(Uuid), default=list, server_default="{}")
    config: Mapped[dict[str, Any]] = mapped_column(
        JSONB, default=dict, server_default=text("'{}'::jsonb")
    )
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error_message: Mapped[str | None] = mapped_column(Text)
    retry_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_by: Mapped[UUID | None]
    cancel_requested: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class TaskLogModel(TenantOwned):
    __tablename__ = "task_logs"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "task_id"], ["tasks.tenant_id", "tasks.id"], ondelete="CASCADE"
        ),
        Index("ix_task_logs_tenant_task", "tenant_id", "task_id", "created_at"),
    )

    task_id: Mapped[UUID]
    attempt: Mapped[int] = mapped_column(Integer)
    operation: Mapped[str] = mapped_column(String(100))
    success: Mapped[bool] = mapped_column(Boolean)
    duration_ms: Mapped[float]
    error: Mapped[str | None] = mapped_column(Text)


_tasks = TaskModel.__table__


class SqlTaskLogRepository(SqlRepository[TaskLog]):
    """A task's attempts, one row each: part of the tasks feature, no port of its own."""

    model = TaskLogModel
    entity = TaskLog


class SqlTaskRepository(SqlRepository[Task]):
    model = TaskModel
    entity = Task
    port = TaskRepository

    def _update(self, task_id: UUID) -> Update:
        return self.update_rows().where(_tasks.c.id == task_id)

    async def _one(self, statement: Update) -> Task | None:
        row = (await self.session.execute(statement.returning(*_tasks.c))).mappings().first()
        return None if row is None else self.to_entity(row)

    async def start(self, task_id: UUID, *, at: datetime, max_attempts: int) -> Task | None:
        runnable = _tasks.c.status.in_([TaskStatus.PENDING.value, TaskStatus.PROCESSING.value])
        cancelled = _tasks.c.cancel_requested.is_(True)
        # Only the first start finds started_at empty; every later one is another attempt,
        # whether the last asked for a retry or died with its worker (then the queue's own
        # count starts again at 1 and cannot be trusted).
        first = _tasks.c.started_at.is_(None)
        spent = and_(~first, _tasks.c.retry_count + 1 >= max_attempts)
        statement = (
            self._update(task_id)
            .where(runnable, ~cancelled, ~spent)
            .values(
                status=TaskStatus.PROCESSING.value,
                retry_count=case((first, 0), else_=_tasks.c.retry_count + 1),
                started_at=at,
                heartbeat_at=at,
                updated_at=func.now(),
            )
        )
        task = await self._one(statement)
        if task is None:
            # Cancelled while queued or while its worker died, or its last attempt died with
            # its worker: end it here, not run it.
            await self.session.execute(
                self._update(task_id)
                .where(runnable, or_(cancelled, spent))
                .values(
                    status=case(
                        (cancelled, TaskStatus.CANCELLED.value), else_=TaskStatus.FAILED.value
                    ),
                    error_message=case((cancelled, _tasks.c.error_message), else_=WORKER_LOST),
                    completed_at=at,
                    updated_at=func.now(),
                )
            )
        return task

    async def progress(self, task_id: UUID, percent: int) -> None:
        await self.session.execute(
            self._update(task_id)
            .where(_tasks.c.progress < percent)
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
            .where(_tasks.c.status.notin_([s.value for s in FINISHED]))
            .values(**values)
        )

    async def back_to_pending(self, task_id: UUID, *, error_message: str) -> None:
        await self.session.execute(
            self._update(task_id)
            .where(_tasks.c.status == TaskStatus.PROCESSING.value)
            .values(
                status=TaskStatus.PENDING.value, error_message=error_message, updated_at=func.now()
            )
        )

    async def heartbeat(self, task_id: UUID) -> None:
        await self.session.execute(
            self._update(task_id)
            .where(_tasks.c.status == TaskStatus.PROCESSING.value)
            .values(heartbeat_at=func.now())
        )

    async def cancel(self, task_id: UUID, at: datetime) -> Task | None:
        pending = (
            self._update(task_id)
            .where(_tasks.c.status == TaskStatus.PENDING.value)
            .values(
                status=TaskStatus.CANCELLED.value,
                cancel_requested=True,
                completed_at=at,
                updated_at=func.now(),
            )
        )
        task = await self._one(pending)
        if task is None:
            running = (
                self._update(task_id)
                .where(_tasks.c.status == TaskStatus.PROCESSING.value)
                .values(cancel_requested=True, updated_at=func.now())
            )
            task = await self._one(running)
        return task

    async def cancel_unfinished(self, at: datetime, *, error_message: str) -> int:
        tenant_tasks = self.update_rows()
        pending = await self.session.execute(
            tenant_tasks.where(_tasks.c.status == TaskStatus.PENDING.value).values(
                status=TaskStatus.CANCELLED.value,
                cancel_requested=True,
                completed_at=at,
                error_message=error_message,
                updated_at=func.now(),
            )
        )
        running = await self.session.execute(
            tenant_tasks.where(
                _tasks.c.status == TaskStatus.PROCESSING.value,
                _tasks.c.cancel_requested.is_(False),
            ).values(cancel_requested=True, updated_at=func.now())
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
        await SqlTaskLogRepository(self.session, self.tenant_id).add(
            task_id=task_id,
            attempt=attempt,
            operation=operation,
            success=success,
            duration_ms=duration_ms,
            error=error,
        )

    async def logs(self, task_id: UUID) -> Sequence[TaskLog]:
        logs = SqlTaskLogRepository(self.session, self.tenant_id)
        table = logs.table()
        rows = await self.session.execute(
            logs.select()
            .where(table.c.task_id == task_id)
            .order_by(table.c.created_at, table.c.attempt)
        )
        return [logs.to_entity(row) for row in rows.mappings()]

    async def stats(self) -> TaskStats:
        mine = self.filters()
        by_status: dict[str, int] = dict(
            (
                await self.session.execute(
                    select(_tasks.c.status, func.count()).where(*mine).group_by(_tasks.c.status)
                )
            ).all()
        )
        by_type: dict[str, int] = dict(
            (
                await self.session.execute(
                    select(_tasks.c.type, func.count()).where(*mine).group_by(_tasks.c.type)
                )
            ).all()
        )
        duration = func.extract("epoch", _tasks.c.completed_at - _tasks.c.started_at) * 1000
        mean, p95 = (
            await self.session.execute(
                select(func.avg(duration), func.percentile_cont(0.95).within_group(duration)).where(
                    *mine, _tasks.c.status == TaskStatus.COMPLETED.value
                )
            )
        ).one()
        return TaskStats(
            by_status={str(k): int(v) for k, v in by_status.items()},
            by_type={str(k): int(v) for k, v in by_type.items()},
            mean_duration_ms=None if mean is None else round(float(mean), 2),
            p95_duration_ms=None if p95 is None else round(float(p95), 2),
        )

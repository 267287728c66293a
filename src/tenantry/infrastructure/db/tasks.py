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
    bindparam,
    case,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.expression import ClauseElement

from tenantry.domain.tasks import (
    TENANT_SUSPENDED,
    WORKER_LOST,
    AttemptEnd,
    Task,
    TaskLog,
    TaskRepository,
    TaskStats,
    TaskStatus,
)
from tenantry.domain.tenants import TenantStatus
from tenantry.infrastructure.db.base import TenantOwned, creator_key
from tenantry.infrastructure.db.repository import SqlRepository
from tenantry.infrastructure.db.tenancy import TENANT_KEY
from tenantry.infrastructure.db.tenants import TenantModel


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
_tenants = TenantModel.__table__
# Unfinished: what start may run and end may finish. Written out, not IN (...), which a
# statement compiled once cannot expand.
_UNFINISHED = or_(
    _tasks.c.status == TaskStatus.PENDING.value, _tasks.c.status == TaskStatus.PROCESSING.value
)


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

    # The statements of every attempt (start, progress, heartbeat, end) are compiled once and
    # run on the driver: one round trip each, and one statement per step.

    def _compiled_update(self) -> Update:
        return update(self.table()).where(*self.compiled_filters(), _tasks.c.id == bindparam("id"))

    async def reap(
        self, task_ids: Sequence[UUID], *, stale_before: datetime, max_attempts: int, at: datetime
    ) -> Sequence[Task]:
        stranded = (
            select(_tasks.c.id, (_tasks.c.retry_count + 1 >= max_attempts).label("spent"))
            .where(
                *self.filters(),
                _tasks.c.id.in_(task_ids),
                _tasks.c.status == TaskStatus.PROCESSING.value,
                _tasks.c.heartbeat_at < stale_before,
            )
            # A worker beating right now holds its row: alive, not stranded. Two reapers at
            # once take different rows.
            .with_for_update(skip_locked=True)
            .cte("stranded")
        )
        spent = stranded.c.spent

        def spent_or(value: Any, otherwise: Any) -> Any:
            return case((spent, value), else_=otherwise)

        # Times are values, not now(): Citus refuses a function call in a CASE.
        moment = literal(at, _tasks.c.completed_at.type)
        statement = (
            self.update_rows()
            .where(_tasks.c.id == stranded.c.id)
            .values(
                status=spent_or(TaskStatus.FAILED.value, TaskStatus.PENDING.value),
                error_message=spent_or(WORKER_LOST, "worker lost"),
                result=spent_or(null(), _tasks.c.result),
                output_files=spent_or(
                    literal([], _tasks.c.output_files.type), _tasks.c.output_files
                ),
                completed_at=spent_or(moment, _tasks.c.completed_at),
                updated_at=moment,
            )
            .returning(*_tasks.c)
        )
        rows = (await self.session.execute(statement)).mappings().all()
        return [self.to_entity(row) for row in rows]

    async def count_pending(self) -> int:
        # A transaction-scoped lock of this tenant's submissions: the count, and the insert
        # that follows it, one submission after another.
        key = func.hashtextextended(f"tenantry.tasks.pending:{self.tenant_id}", 0)
        await self.session.execute(select(func.pg_advisory_xact_lock(key)))
        pending = await self.session.scalar(
            select(func.count())
            .select_from(_tasks)
            .where(*self.filters(), _tasks.c.status == TaskStatus.PENDING.value)
        )
        return int(pending or 0)

    async def start(self, task_id: UUID, *, at: datetime, max_attempts: int) -> Task | None:
        def build() -> ClauseElement:
            at = bindparam("at", type_=_tasks.c.started_at.type)
            # Only an active tenant's tasks run: the tenants row is read in the same statement.
            active = (
                select(_tenants.c.id)
                .where(
                    _tenants.c.id == bindparam(TENANT_KEY),
                    _tenants.c.status == TenantStatus.ACTIVE.value,
                )
                .exists()
            )
            cancelled = _tasks.c.cancel_requested.is_(True)
            # Only the first start finds started_at empty; every later one is another attempt,
            # whether the last asked for a retry or died with its worker (then the queue's own
            # count starts again at 1 and cannot be trusted).
            first = _tasks.c.started_at.is_(None)
            spent = and_(~first, _tasks.c.retry_count + 1 >= bindparam("max_attempts"))
            runs = and_(active, ~cancelled, ~spent)

            def running(value: Any, otherwise: Any) -> Any:
                return case((runs, value), else_=otherwise)

            # Suspended, cancelled while queued or while its worker died, or its last attempt
            # died with its worker: the task ends here instead of running.
            return (
                self._compiled_update()
                .where(_UNFINISHED)
                .values(
                    status=case(
                        (runs, TaskStatus.PROCESSING.value),
                        (or_(~active, cancelled), TaskStatus.CANCELLED.value),
                        else_=TaskStatus.FAILED.value,
                    ),
                    error_message=case(
                        (runs, _tasks.c.error_message),
                        (~active, TENANT_SUSPENDED),
                        (cancelled, _tasks.c.error_message),
                        else_=WORKER_LOST,
                    ),
                    retry_count=running(
                        case((first, 0), else_=_tasks.c.retry_count + 1), _tasks.c.retry_count
                    ),
                    started_at=running(at, _tasks.c.started_at),
                    heartbeat_at=running(at, _tasks.c.heartbeat_at),
                    completed_at=running(_tasks.c.completed_at, at),
                    updated_at=func.now(),
                )
                .returning(*_tasks.c)
            )

        record = await self.statement("start", build).fetch_row(
            self.session, **self.arguments(id=task_id, at=at, max_attempts=max_attempts)
        )
        return None if record is None else self.to_entity(record)

    async def progress(self, task_id: UUID, percent: int) -> None:
        statement = self.statement(
            "progress",
            lambda: (
                self._compiled_update()
                .where(_tasks.c.progress < bindparam("percent"))
                .values(
                    progress=bindparam("percent"), heartbeat_at=func.now(), updated_at=func.now()
                )
            ),
        )
        await statement.fetch_row(self.session, **self.arguments(id=task_id, percent=percent))

    async def end(self, task_id: UUID, end: AttemptEnd) -> bool:
        retry = end.status == TaskStatus.PENDING
        logs = SqlTaskLogRepository(self.session, self.tenant_id)
        log = logs._new_row(
            {
                "task_id": task_id,
                "attempt": end.attempt,
                "operation": end.operation,
                "success": end.success,
                "duration_ms": end.duration_ms,
                "error": end.error,
            }
        )
        names = tuple(sorted(log))

        def build() -> ClauseElement:
            table = logs.table()
            logged = insert(table).values(
                {name: bindparam(f"log_{name}", type_=table.c[name].type) for name in names}
            )
            raised = func.greatest(_tasks.c.progress, bindparam("progress"))
            # The id comes back when the task changed: the runner audits only such an end.
            statement = self._compiled_update().add_cte(logged.cte("logged")).returning(_tasks.c.id)
            if retry:
                return statement.where(_tasks.c.status == TaskStatus.PROCESSING.value).values(
                    status=TaskStatus.PENDING.value,
                    error_message=bindparam("error", type_=_tasks.c.error_message.type),
                    progress=raised,
                    updated_at=func.now(),
                )
            return statement.where(_UNFINISHED).values(
                status=bindparam("status", type_=_tasks.c.status.type),
                completed_at=bindparam("at", type_=_tasks.c.completed_at.type),
                result=bindparam("result", type_=_tasks.c.result.type),
                error_message=bindparam("error", type_=_tasks.c.error_message.type),
                output_files=bindparam("output_files", type_=_tasks.c.output_files.type),
                progress=raised,
                updated_at=func.now(),
            )

        values = self.arguments(
            id=task_id,
            status=end.status.value,
            at=end.at,
            result=end.result,
            error=end.error,
            output_files=list(end.output_files),
            # A completed task is at 100, whatever its handler last said.
            progress=100 if end.success else end.progress,
        )
        values.update({f"log_{name}": value for name, value in log.items()})
        changed = await self.statement(("end", retry, names), build).fetch_row(
            self.session, **values
        )
        return changed is not None

    async def heartbeat(self, task_id: UUID) -> None:
        statement = self.statement(
            "heartbeat",
            lambda: (
                self._compiled_update()
                .where(_tasks.c.status == TaskStatus.PROCESSING.value)
                .values(heartbeat_at=func.now())
            ),
        )
        await statement.fetch_row(self.session, **self.arguments(id=task_id))

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

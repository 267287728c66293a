"""Usage days: one row per tenant and UTC day, one per task type too, and the flushes already
folded into them (migration 0014_usage)."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Date,
    Integer,
    String,
    Table,
    UniqueConstraint,
    delete,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.domain.ids import new_id
from tenantry.domain.usage import Counter, Tally, TaskUsage, UsageDay, UsageRepository
from tenantry.infrastructure.db.base import TenantOwned
from tenantry.infrastructure.db.repository import TenantRows
from tenantry.infrastructure.db.tenancy import of_tenant

# How long a folded flush's id is remembered: far longer than a tally can wait in the buffer.
FLUSH_MEMORY = timedelta(days=7)
COUNTERS = tuple(counter.value for counter in Counter)


def _count() -> Mapped[int]:
    return mapped_column(BigInteger, default=0, server_default="0")


class UsageDayModel(TenantOwned):
    __tablename__ = "usage_daily"
    __table_args__ = (UniqueConstraint("tenant_id", "day", name="uq_usage_daily_tenant_day"),)

    day: Mapped[date] = mapped_column(Date)
    requests_read: Mapped[int] = _count()
    requests_write: Mapped[int] = _count()
    requests_upload: Mapped[int] = _count()
    requests_task: Mapped[int] = _count()
    bytes_uploaded: Mapped[int] = _count()
    bytes_downloaded: Mapped[int] = _count()
    active_users: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The tenant's stored bytes at each fold (migration 0016_usage_stored).
    bytes_stored_peak: Mapped[int] = _count()
    bytes_stored_end: Mapped[int] = _count()


class UsageTaskModel(TenantOwned):
    __tablename__ = "usage_task_daily"
    __table_args__ = (
        UniqueConstraint("tenant_id", "day", "task_type", name="uq_usage_task_daily_tenant_day"),
    )

    day: Mapped[date] = mapped_column(Date)
    task_type: Mapped[str] = mapped_column(String(100))
    runs: Mapped[int] = _count()
    ms: Mapped[int] = _count()


class UsageFlushModel(TenantOwned):
    """A flush folded into the tenant's days: its id (UUIDv7, from the time it was claimed)."""

    __tablename__ = "usage_flushes"


def id_floor(days_ago: timedelta) -> UUID:
    """The smallest UUIDv7 of the millisecond ``days_ago`` before now: ids below it are older."""
    now_ms = new_id().int >> 80
    return UUID(int=(now_ms - int(days_ago.total_seconds() * 1000)) << 80)


_DAYS: Table = UsageDayModel.__table__  # type: ignore[assignment]
_TASKS: Table = UsageTaskModel.__table__  # type: ignore[assignment]
_FLUSHES: Table = UsageFlushModel.__table__  # type: ignore[assignment]


class SqlUsageRepository(TenantRows[UsageDay]):
    model = UsageDayModel
    entity = UsageDay
    port = UsageRepository

    async def fold(self, tally: Tally, *, stored_bytes: int) -> bool:
        flushes = _FLUSHES
        first = await self.session.execute(
            insert(flushes)
            .values(
                tenant_id=self.tenant_id,
                id=tally.flush_id,
                created_at=func.now(),
                updated_at=func.now(),
            )
            .on_conflict_do_nothing()
            .returning(flushes.c.id)
        )
        if first.first() is None:
            return False
        days = _DAYS
        counted = {name: tally.counters.get(Counter(name), 0) for name in COUNTERS}
        row = insert(days).values(
            tenant_id=self.tenant_id,
            id=new_id(),
            day=tally.day,
            active_users=tally.active_users,
            bytes_stored_peak=stored_bytes,
            bytes_stored_end=stored_bytes,
            created_at=func.now(),
            updated_at=func.now(),
            **counted,
        )
        await self.session.execute(
            row.on_conflict_do_update(
                constraint="uq_usage_daily_tenant_day",
                set_={
                    **{name: days.c[name] + row.excluded[name] for name in COUNTERS},
                    "active_users": func.greatest(days.c.active_users, row.excluded.active_users),
                    "bytes_stored_peak": func.greatest(
                        days.c.bytes_stored_peak, row.excluded.bytes_stored_end
                    ),
                    "bytes_stored_end": row.excluded.bytes_stored_end,
                    # The new row's now(): Citus takes no function call in DO UPDATE SET.
                    "updated_at": row.excluded.updated_at,
                },
            )
        )
        tasks = _TASKS
        for task_type in sorted(tally.task_runs.keys() | tally.task_ms.keys()):
            task = insert(tasks).values(
                tenant_id=self.tenant_id,
                id=new_id(),
                day=tally.day,
                task_type=task_type,
                runs=tally.task_runs.get(task_type, 0),
                ms=tally.task_ms.get(task_type, 0),
                created_at=func.now(),
                updated_at=func.now(),
            )
            await self.session.execute(
                task.on_conflict_do_update(
                    constraint="uq_usage_task_daily_tenant_day",
                    set_={
                        "runs": tasks.c.runs + task.excluded.runs,
                        "ms": tasks.c.ms + task.excluded.ms,
                        "updated_at": task.excluded.updated_at,
                    },
                )
            )
        # The key's range scan: the tenant's flushes older than any tally still waiting.
        await self.session.execute(
            delete(flushes).where(
                of_tenant(flushes, self.tenant_id), flushes.c.id < id_floor(FLUSH_MEMORY)
            )
        )
        return True

    async def days(self, first: date, last: date) -> list[UsageDay]:
        days, tasks = _DAYS, _TASKS
        task_rows = await self.session.execute(
            select(tasks.c.day, tasks.c.task_type, tasks.c.runs, tasks.c.ms).where(
                of_tenant(tasks, self.tenant_id), tasks.c.day.between(first, last)
            )
        )
        by_day: dict[date, dict[str, TaskUsage]] = defaultdict(dict)
        for day, task_type, runs, ms in task_rows:
            by_day[day][task_type] = TaskUsage(runs=runs, seconds=ms / 1000)
        rows = await self.session.execute(
            select(
                days.c.day,
                days.c.active_users,
                days.c.bytes_stored_peak,
                days.c.bytes_stored_end,
                *(days.c[name] for name in COUNTERS),
            )
            .where(of_tenant(days, self.tenant_id), days.c.day.between(first, last))
            .order_by(days.c.day)
        )
        # Every fold writes the day's row: a day with task runs has one.
        return [
            UsageDay(
                tenant_id=self.tenant_id,
                tasks=dict(sorted(by_day.get(row.day, {}).items())),
                **row._asdict(),
            )
            for row in rows
        ]

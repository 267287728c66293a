"""Usage metering: each process's tally of what tenants used, the worker's fold of the shared
buffer into one row per tenant and day, and the reading of those rows by a tenant's owners and
admins and by platform superusers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from datetime import date, datetime, time, timedelta
from math import ceil
from typing import Literal
from uuid import UUID

import msgspec

from tenantry.domain.auth import Actor
from tenantry.domain.errors import Forbidden, Invalid
from tenantry.domain.files import FileRepository
from tenantry.domain.ports import Clock, UnitOfWork
from tenantry.domain.tenants import Tenant
from tenantry.domain.usage import (
    LIMITS_SETTING,
    REQUESTS,
    USAGE_DAYS_MAX,
    Counter,
    RequestClass,
    UsageBuffer,
    UsageDay,
    UsageGauges,
    UsageLimitReached,
    UsageLimits,
    UsageRepository,
)

# A day's counts in a tally: the counters by name, and per task type "task_runs:<type>" and
# "task_ms:<type>" (milliseconds: the buffer adds integers).
TASK_RUNS, TASK_MS = "task_runs:", "task_ms:"
Key = tuple[UUID, date]


class Counts(msgspec.Struct):
    fields: dict[str, int] = msgspec.field(default_factory=dict)
    users: set[UUID] = msgspec.field(default_factory=set)

    @property
    def requests(self) -> int:
        return sum(self.fields.get(name, 0) for name in REQUESTS.values())

    @property
    def task_ms(self) -> int:
        return sum(n for name, n in self.fields.items() if name.startswith(TASK_MS))

    def merge(self, other: Counts) -> None:
        for name, amount in other.fields.items():
            self.fields[name] = self.fields.get(name, 0) + amount
        self.users |= other.users


class Shared(msgspec.Struct, frozen=True):
    """A tenant's totals of one day across every process, as last read from the buffer."""

    day: date
    requests: int = 0
    task_ms: int = 0


class UsageTally:
    """One process's counts since they were last taken, by tenant and UTC day: what the hot
    path pays is a dict update (the UsageMeter port). It also holds the tenants' limits and
    their totals of the day, as the adapter last read them, for :meth:`check`."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.counts: dict[Key, Counts] = {}
        self.limits: dict[UUID, UsageLimits] = {}
        self.shared: dict[UUID, Shared] = {}

    def check(self, tenant_id: UUID, kind: RequestClass) -> None:
        limits = self.limits.get(tenant_id)
        if limits is None:
            return
        now = self.clock.now()
        today = now.date()
        shared = self.shared.get(tenant_id)
        if shared is None or shared.day != today:
            shared = Shared(day=today)
        local = self.counts.get((tenant_id, today), Counts())
        requests = shared.requests + local.requests
        task_ms = shared.task_ms + local.task_ms
        # Until 00:00 UTC, when the day's counts start again.
        midnight = datetime.combine(today + timedelta(days=1), time(), now.tzinfo)
        retry_after = max(1, ceil((midnight - now).total_seconds()))
        if limits.requests_per_day is not None and requests >= limits.requests_per_day:
            raise UsageLimitReached(
                "requests_per_day", limits.requests_per_day, retry_after=retry_after
            )
        allowed = limits.task_seconds_per_day
        if kind is RequestClass.TASK and allowed is not None and task_ms >= allowed * 1000:
            raise UsageLimitReached("task_seconds_per_day", allowed, retry_after=retry_after)

    def _of(self, tenant_id: UUID) -> Counts:
        key = (tenant_id, self.clock.now().date())
        found = self.counts.get(key)
        if found is None:
            found = self.counts[key] = Counts()
        return found

    def _add(self, counts: Counts, name: str, amount: int) -> None:
        counts.fields[name] = counts.fields.get(name, 0) + amount

    def request(self, tenant_id: UUID, user_id: UUID, kind: RequestClass) -> None:
        counts = self._of(tenant_id)
        self._add(counts, REQUESTS[kind], 1)
        counts.users.add(user_id)

    def add(self, tenant_id: UUID, counter: Counter, amount: int) -> None:
        if amount:
            self._add(self._of(tenant_id), counter, amount)

    def task_ran(self, tenant_id: UUID, task_type: str, seconds: float) -> None:
        counts = self._of(tenant_id)
        self._add(counts, TASK_RUNS + task_type, 1)
        self._add(counts, TASK_MS + task_type, round(seconds * 1000))

    def take(self) -> dict[Key, Counts]:
        """The counts so far; the tally starts again from nothing."""
        taken, self.counts = self.counts, {}
        return taken

    def give_back(self, taken: dict[Key, Counts]) -> None:
        """Counts taken but not gathered (the buffer was unreachable): counted again, so that
        they go with the next attempt."""
        for key, counts in taken.items():
            self.counts.setdefault(key, Counts()).merge(counts)


class NoUsage:
    """Counts nothing and limits nothing: metering switched off (the setting usage_metering)."""

    def check(self, tenant_id: UUID, kind: RequestClass) -> None:
        pass

    def request(self, tenant_id: UUID, user_id: UUID, kind: RequestClass) -> None:
        pass

    def add(self, tenant_id: UUID, counter: Counter, amount: int) -> None:
        pass

    def task_ran(self, tenant_id: UUID, task_type: str, seconds: float) -> None:
        pass


class FoldUsage:
    """The worker's step: every tally waiting in the buffer added to its tenant's day, each in
    a transaction of its own, then forgotten by the buffer. A tally folded but not yet
    forgotten (a crash in between) is recognised by its flush id and only forgotten. Then the
    tenants' limits, read from their settings, are published for every process to check."""

    def __init__(
        self, units: Callable[[], AbstractAsyncContextManager[UnitOfWork]], buffer: UsageBuffer
    ) -> None:
        self.units = units
        self.buffer = buffer

    async def __call__(self) -> int:
        folded = 0
        for tally in await self.buffer.claim():
            async with self.units() as uow:
                # A tenant erased since its requests were counted: nothing left to count for.
                if await uow.tenants.get(tally.tenant_id) is not None:
                    stored, _ = await uow.repository(FileRepository, tally.tenant_id).usage()
                    usage = uow.repository(UsageRepository, tally.tenant_id)
                    folded += await usage.fold(tally, stored_bytes=stored)
                    await uow.commit()
            await self.buffer.folded(tally)
        async with self.units() as uow:
            settings = await uow.tenants.with_setting(LIMITS_SETTING)
        await self.buffer.publish_limits(
            {tenant: limits for tenant, value in settings.items() if (limits := valid(value)).any}
        )
        return folded


class ReportBusiestTenants:
    """The worker's step after each fold: the tenants with the most requests today, by slug,
    for the dashboards' top tenants."""

    def __init__(
        self,
        units: Callable[[], AbstractAsyncContextManager[UnitOfWork]],
        buffer: UsageBuffer,
        gauges: UsageGauges,
        clock: Clock,
        *,
        count: int = 10,
    ) -> None:
        self.units = units
        self.buffer = buffer
        self.gauges = gauges
        self.clock = clock
        self.count = count

    async def __call__(self) -> list[tuple[str, int]]:
        busiest = await self.buffer.busiest(self.clock.now().date(), self.count)
        named = []
        async with self.units() as uow:
            for tenant_id, requests in busiest:
                if (tenant := await uow.tenants.get(tenant_id)) is not None:
                    named.append((tenant.slug, requests))
        self.gauges.busiest(named)
        return named


def valid(value: object) -> UsageLimits:
    """A stored setting's limits; none for one no longer valid (settings are checked when
    written, so only by a hand-made change)."""
    try:
        return UsageLimits.of(value)
    except Invalid:
        return UsageLimits()


def usage_range(first: date | None, last: date | None, today: date) -> tuple[date, date]:
    """The days asked for, the last 30 by default (fewer when the calendar starts sooner);
    refused when reversed or too wide."""
    last = last or today
    first = first or last - timedelta(days=min(29, (last - date.min).days))
    if first > last:
        raise Invalid("from must not be after to.")
    if (last - first).days >= USAGE_DAYS_MAX:
        raise Invalid(f"At most {USAGE_DAYS_MAX} days at once.")
    return first, last


class UsageDays(msgspec.Struct, kw_only=True, frozen=True):
    first: date
    last: date
    # Oldest first; days without usage left out.
    days: list[UsageDay]


class ListUsageDays:
    """The caller's tenant's usage, day by day."""

    def __init__(self, uow: UnitOfWork, clock: Clock) -> None:
        self.uow = uow
        self.clock = clock

    async def __call__(
        self, actor: Actor, first: date | None = None, last: date | None = None
    ) -> UsageDays:
        if not actor.can_manage:
            raise Forbidden("Only the tenant's owners and admins may read its usage.")
        first, last = usage_range(first, last, self.clock.now().date())
        async with self.uow:
            days = await self.uow.repository(UsageRepository, actor.tenant_id).days(first, last)
        return UsageDays(first=first, last=last, days=days)


class TenantUsage(msgspec.Struct, kw_only=True, frozen=True):
    """One tenant's usage summed over a range of days."""

    tenant_id: UUID
    slug: str
    requests: int = 0
    requests_read: int = 0
    requests_write: int = 0
    requests_upload: int = 0
    requests_task: int = 0
    bytes_uploaded: int = 0
    bytes_downloaded: int = 0
    # The most users active on one day of the range.
    peak_active_users: int = 0
    # The most bytes stored on one day of the range, and at the end of its last day with usage.
    peak_bytes_stored: int = 0
    bytes_stored: int = 0
    task_runs: int = 0
    task_seconds: float = 0.0


UsageSort = Literal[
    "requests",
    "requests_read",
    "requests_write",
    "requests_upload",
    "requests_task",
    "bytes_uploaded",
    "bytes_downloaded",
    "peak_active_users",
    "peak_bytes_stored",
    "bytes_stored",
    "task_runs",
    "task_seconds",
    "slug",
]


def summed(tenant: Tenant, days: Iterable[UsageDay]) -> TenantUsage:
    totals = dict.fromkeys((counter.value for counter in Counter), 0)
    peak, peak_stored, stored, runs, seconds = 0, 0, 0, 0, 0.0
    for day in days:  # oldest first
        for name in totals:
            totals[name] += getattr(day, name)
        peak = max(peak, day.active_users)
        peak_stored, stored = max(peak_stored, day.bytes_stored_peak), day.bytes_stored_end
        runs += sum(task.runs for task in day.tasks.values())
        seconds += sum(task.seconds for task in day.tasks.values())
    return TenantUsage(
        tenant_id=tenant.id,
        slug=tenant.slug,
        requests=sum(totals[REQUESTS[kind]] for kind in RequestClass),
        peak_active_users=peak,
        peak_bytes_stored=peak_stored,
        bytes_stored=stored,
        task_runs=runs,
        task_seconds=round(seconds, 3),
        **totals,
    )


class TenantsUsage(msgspec.Struct, kw_only=True, frozen=True):
    first: date
    last: date
    tenants: list[TenantUsage]


class ListTenantsUsage:
    """Every tenant's usage summed over a range, sorted, for platform superusers. Row level
    security shows one tenant per query, so this reads each tenant's days in turn: a report,
    not a hot path."""

    page = 500

    def __init__(self, uow: UnitOfWork, clock: Clock) -> None:
        self.uow = uow
        self.clock = clock

    async def __call__(
        self,
        actor: Actor,
        first: date | None = None,
        last: date | None = None,
        *,
        sort: UsageSort = "requests",
        descending: bool = True,
    ) -> TenantsUsage:
        if not actor.is_superuser:
            raise Forbidden("Only platform superusers may do this.")
        first, last = usage_range(first, last, self.clock.now().date())
        found: list[TenantUsage] = []
        async with self.uow:
            offset = 0
            while True:
                tenants, total = await self.uow.tenants.list(limit=self.page, offset=offset)
                for tenant in tenants:
                    days = await self.uow.repository(UsageRepository, tenant.id).days(first, last)
                    found.append(summed(tenant, days))
                offset += self.page
                if offset >= total or not tenants:
                    break
        found.sort(key=lambda usage: getattr(usage, sort), reverse=descending)
        return TenantsUsage(first=first, last=last, tenants=found)

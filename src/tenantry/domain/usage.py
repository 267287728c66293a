"""Usage metering: what each tenant used, per UTC day, to bill and to plan capacity.

Counted where it happens (requests by class, bytes moved, task runs and seconds, the users
who made requests), kept in each process for a few seconds, gathered in a shared buffer, and
folded into one row per tenant and day by the worker: never a database write per request.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, Protocol, runtime_checkable
from uuid import UUID

import msgspec

from tenantry.domain.errors import RateLimited
from tenantry.domain.repository import Repository
from tenantry.domain.tenants import setting_value

# The widest range one read of a tenant's usage covers.
USAGE_DAYS_MAX = 400


class RequestClass(StrEnum):
    READ = "read"
    WRITE = "write"
    UPLOAD = "upload"
    TASK = "task"


class Counter(StrEnum):
    """The additive counters of a tenant's day, named as its row's columns."""

    REQUESTS_READ = "requests_read"
    REQUESTS_WRITE = "requests_write"
    REQUESTS_UPLOAD = "requests_upload"
    REQUESTS_TASK = "requests_task"
    BYTES_UPLOADED = "bytes_uploaded"
    BYTES_DOWNLOADED = "bytes_downloaded"


REQUESTS = {
    RequestClass.READ: Counter.REQUESTS_READ,
    RequestClass.WRITE: Counter.REQUESTS_WRITE,
    RequestClass.UPLOAD: Counter.REQUESTS_UPLOAD,
    RequestClass.TASK: Counter.REQUESTS_TASK,
}


# The tenant setting that holds its limits: {"limits": {"requests_per_day": 100000, ...}}.
LIMITS_SETTING = "limits"
Positive = Annotated[int, msgspec.Meta(ge=1, le=2**53)]


class UsageLimits(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A tenant's optional daily limits (UTC days); None is no limit."""

    requests_per_day: Positive | None = None
    task_seconds_per_day: Positive | None = None

    @classmethod
    def of(cls, value: object) -> UsageLimits:
        """The limits a tenant setting holds (null: none); Invalid naming the field otherwise."""
        return setting_value(value, cls, LIMITS_SETTING)

    @property
    def any(self) -> bool:
        return self.requests_per_day is not None or self.task_seconds_per_day is not None


class UsageLimitReached(RateLimited):
    """The tenant used what one of its daily limits allows; it resets at 00:00 UTC."""

    def __init__(self, limit: str, allowed: int, *, retry_after: int) -> None:
        super().__init__(
            f"The tenant's daily limit {limit} ({allowed}) is reached; it resets at 00:00 UTC.",
            retry_after=retry_after,
        )
        self.fields = {limit: f"at most {allowed} a day"}


class TaskUsage(msgspec.Struct, kw_only=True, frozen=True):
    """Attempts of one task type that ended that day, and the seconds their handlers ran."""

    runs: int = 0
    seconds: float = 0.0


class UsageDay(msgspec.Struct, kw_only=True, frozen=True):
    tenant_id: UUID
    day: date
    requests_read: int = 0
    requests_write: int = 0
    requests_upload: int = 0
    requests_task: int = 0
    bytes_uploaded: int = 0
    bytes_downloaded: int = 0
    # Distinct users who made at least one request that day.
    active_users: int = 0
    # Bytes of the tenant's live files: the most seen that day, and the last.
    bytes_stored_peak: int = 0
    bytes_stored_end: int = 0
    tasks: dict[str, TaskUsage] = msgspec.field(default_factory=dict)

    @property
    def requests(self) -> int:
        return self.requests_read + self.requests_write + self.requests_upload + self.requests_task


class Tally(msgspec.Struct, kw_only=True):
    """What was counted for one tenant and day and not yet folded into its row: a flush of
    the shared buffer, identified so that folding it twice adds it once."""

    flush_id: UUID
    tenant_id: UUID
    day: date
    counters: dict[Counter, int] = msgspec.field(default_factory=dict)
    task_runs: dict[str, int] = msgspec.field(default_factory=dict)
    task_ms: dict[str, int] = msgspec.field(default_factory=dict)
    # The day's distinct users so far (a count, not an increment).
    active_users: int = 0


# Checkable: route handlers receive it as a dependency, which Litestar checks.
@runtime_checkable
class UsageMeter(Protocol):
    """Counts on the hot path: in memory, no I/O; the adapter gathers the counts elsewhere."""

    def request(self, tenant_id: UUID, user_id: UUID, kind: RequestClass) -> None: ...

    def add(self, tenant_id: UUID, counter: Counter, amount: int) -> None: ...

    def task_ran(self, tenant_id: UUID, task_type: str, seconds: float) -> None: ...

    def check(self, tenant_id: UUID, kind: RequestClass) -> None:
        """Raise UsageLimitReached when a request of ``kind`` would go past one of the
        tenant's daily limits, as far as this process knows (the shared totals at its last
        flush, and what it counted since)."""
        ...


class UsageBuffer(Protocol):
    """The shared buffer every process's counts gather in, until the worker folds them."""

    async def claim(self) -> list[Tally]:
        """Every tally waiting to be folded: those gathered since the last claim, and any
        claimed before but never marked folded (a worker that died mid-way)."""
        ...

    async def folded(self, tally: Tally) -> None:
        """Forget a tally now in the database."""
        ...

    async def publish_limits(self, limits: dict[UUID, UsageLimits]) -> None:
        """Make the tenants' limits (only those that have some) known to every process."""
        ...

    async def busiest(self, day: date, count: int) -> list[tuple[UUID, int]]:
        """The ``count`` tenants with the most requests on ``day`` so far, most first."""
        ...


class UsageGauges(Protocol):
    """What the dashboards show of usage: the busiest tenants only, so that the series stay
    few however many tenants there are."""

    def busiest(self, tenants: list[tuple[str, int]]) -> None:
        """The busiest tenants now (slug, requests today), most first; any other tenant's
        series goes."""
        ...


class UsageRepository(Repository[UsageDay], Protocol):
    """One tenant's usage days."""

    async def fold(self, tally: Tally, *, stored_bytes: int) -> bool:
        """Add ``tally`` to its day's row, once, with the tenant's ``stored_bytes`` now (the
        day's last, and its peak if higher): False (and nothing changed) if a tally with its
        flush id was folded before."""
        ...

    async def days(self, first: date, last: date) -> list[UsageDay]:
        """The tenant's days from ``first`` to ``last`` included that have usage, oldest first."""
        ...

"""Tasks: background work a user asked for, with status and progress they can follow.

The row is the truth for what a user sees; the job queue only carries the task id.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, ClassVar, Protocol
from uuid import UUID

import msgspec

from tenantry.domain.errors import DomainError, RateLimited
from tenantry.domain.repository import Repository
from tenantry.domain.tenants import setting_value


class TaskStatus(enum.StrEnum):
    """Where a task stands: pending (queued), processing, or finished as completed, failed or
    cancelled."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
# Why a task ended without its handler saying so.
WORKER_LOST = "The worker running this task stopped responding."
TENANT_SUSPENDED = "The tenant was suspended."

# The tenant setting that overrides the platform's task limits for one tenant.
TASK_LIMITS_SETTING = "task_limits"
# What a submission refused for the pending limit is told to wait before trying again.
PENDING_RETRY_AFTER_S = 10


class TaskLimits(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """How many tasks of one tenant may wait to run (``pending``) and run at once
    (``running``); None is no limit. The platform's defaults are
    TENANTRY_TASK_MAX_PENDING_PER_TENANT and TENANTRY_TASK_MAX_RUNNING_PER_TENANT; a tenant's
    setting ``task_limits`` overrides either."""

    pending: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    running: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None

    @classmethod
    def of(cls, value: object) -> TaskLimits:
        """The limits a tenant setting holds (null: none); Invalid naming the field otherwise."""
        return setting_value(value, cls, TASK_LIMITS_SETTING)

    def over(self, tenant_settings: dict[str, Any]) -> TaskLimits:
        """These limits, but for those the tenant's own setting gives."""
        own = TaskLimits.of(tenant_settings.get(TASK_LIMITS_SETTING))
        return TaskLimits(
            pending=own.pending if own.pending is not None else self.pending,
            running=own.running if own.running is not None else self.running,
        )


class TooManyPendingTasks(RateLimited):
    """The tenant has as many tasks waiting to run as its limit allows."""

    def __init__(self, allowed: int) -> None:
        super().__init__(
            f"The tenant has {allowed} tasks waiting to run, as many as it may; submit more "
            "once some have started.",
            retry_after=PENDING_RETRY_AFTER_S,
        )
        self.fields = {f"{TASK_LIMITS_SETTING}.pending": f"at most {allowed}"}


class Task(msgspec.Struct, kw_only=True, frozen=True):
    """A submitted task; the defaults are a new one's."""

    # What a list's ``q`` searches.
    search_field: ClassVar[str] = "type"

    id: UUID
    tenant_id: UUID
    type: str
    status: TaskStatus = TaskStatus.PENDING
    progress: int = 0
    input_files: list[UUID] = msgspec.field(default_factory=list)
    output_files: list[UUID] = msgspec.field(default_factory=list)
    config: dict[str, Any] = msgspec.field(default_factory=dict)
    result: dict[str, Any] | None = None
    error_message: str | None = None
    # Attempts started so far, less one (0 before the first too); the row counts them, not the
    # queue, so an attempt killed with its worker still counts.
    retry_count: int = 0
    created_by: UUID | None = None
    cancel_requested: bool = False
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None


class TaskLog(msgspec.Struct, kw_only=True, frozen=True):
    """One attempt at a task."""

    id: UUID
    task_id: UUID
    attempt: int
    operation: str
    success: bool
    duration_ms: float
    error: str | None
    created_at: datetime


class AttemptEnd(msgspec.Struct, kw_only=True, frozen=True):
    """How an attempt ended: its log row's figures and the task's state after it."""

    attempt: int
    operation: str
    duration_ms: float
    # The task's status after the attempt: PENDING when a retry follows.
    status: TaskStatus
    at: datetime
    progress: int
    result: dict[str, Any] | None = None
    error: str | None = None
    output_files: list[UUID] = msgspec.field(default_factory=list)

    @property
    def success(self) -> bool:
        return self.status == TaskStatus.COMPLETED


class TaskStats(msgspec.Struct, kw_only=True, frozen=True):
    by_status: dict[str, int]
    by_type: dict[str, int]
    mean_duration_ms: float | None
    p95_duration_ms: float | None


class TaskFinished(DomainError):
    """The task already ended; it cannot be cancelled."""


class RetryableError(Exception):
    """A handler hit a transient failure: the attempt may be repeated later."""


class TaskCancelled(Exception):
    """Raised by a handler's cancellation check to stop at a safe point; its message, if any,
    says why when the user did not ask for it."""


class TaskRepository(Repository[Task], Protocol):
    """Tasks of one tenant. Status changes are conditional updates: the row decides."""

    async def reap(
        self, task_ids: Sequence[UUID], *, stale_before: datetime, max_attempts: int, at: datetime
    ) -> Sequence[Task]:
        """At ``at``: of these tasks, those still in processing whose worker has not beaten since
        ``stale_before`` (and does not hold its row at this moment) go back to pending, or fail
        with ``WORKER_LOST`` when their attempts are spent; returned as they now are."""
        ...

    async def count_pending(self) -> int:
        """The tenant's pending tasks, counted under a lock of the tenant's held until the
        transaction ends: concurrent submissions of one tenant count one after another."""
        ...

    async def start(self, task_id: UUID, *, at: datetime, max_attempts: int) -> Task | None:
        """pending (or processing, after a crash) -> processing, counting the attempt in the
        row (``retry_count`` + 1 is its number); None when it is not runnable (finished or
        gone). A task whose tenant is not active ends as cancelled here instead
        (``TENANT_SUSPENDED``), one whose cancellation was asked for as cancelled, and one
        whose attempts are spent (its last worker died) as failed: returned so ended."""
        ...

    async def progress(self, task_id: UUID, percent: int) -> None:
        """Raise the progress; it never goes backwards. A heartbeat too."""
        ...

    async def end(self, task_id: UUID, end: AttemptEnd) -> bool:
        """Record how an attempt ended, at once: its log row, and the task finished with
        ``end.status`` (unless it already was), or back to pending for a retry (if still
        processing), its progress raised to ``end.progress``. Whether the task changed so."""
        ...

    async def heartbeat(self, task_id: UUID) -> None: ...

    async def cancel(self, task_id: UUID, at: datetime) -> Task | None:
        """Cancel a pending task at once, or ask a running one to stop. None when finished."""
        ...

    async def cancel_unfinished(self, at: datetime, *, error_message: str) -> int:
        """Cancel every pending task of the tenant at once, with ``error_message``, and ask
        every running one to stop; how many tasks that touched."""
        ...

    async def logs(self, task_id: UUID) -> Sequence[TaskLog]: ...

    async def stats(self) -> TaskStats: ...


class TaskSweeps(Protocol):
    """The platform's sweeps over every tenant's tasks, one statement each. A sweep takes at
    most ``per_tenant`` tasks of each tenant, its oldest first, so that one tenant's backlog
    leaves the others their turn."""

    async def stranded(
        self, stale_before: datetime, *, per_tenant: int
    ) -> Sequence[tuple[UUID, UUID]]:
        """The (tenant, task) keys of tasks in processing whose worker has not beaten since
        ``stale_before``: each tenant's reap then takes them back (``TaskRepository.reap``)."""
        ...

    async def stale_pending(self, created_before: datetime, *, per_tenant: int) -> Sequence[Task]:
        """Pending tasks created before ``created_before``."""
        ...


class JobQueue(Protocol):
    """Carries task ids to workers. The job id is the task id: a double submit runs once."""

    async def enqueue(
        self, task: Task, *, request_id: str | None, running_limit: int | None = None
    ) -> None:
        """Queue the task's job. ``running_limit``: the tenant's cap on its tasks running at
        once (0 for none), when the caller knows it; otherwise the last one given for the
        tenant holds, or the workers' default."""
        ...


class TaskMetrics(Protocol):
    """Counts task attempts by type and outcome, and times them, for the dashboards.

    Every started attempt ends in exactly one of the other four, with the handler's seconds.
    """

    def started(self, task_type: str) -> None: ...

    def succeeded(self, task_type: str, seconds: float) -> None: ...

    def failed(self, task_type: str, seconds: float) -> None:
        """Failed for good: a permanent error, or a retryable one with no attempts left."""
        ...

    def retried(self, task_type: str, seconds: float) -> None:
        """Failed with a retryable error; another attempt follows after a backoff."""
        ...

    def cancelled(self, task_type: str, seconds: float) -> None: ...

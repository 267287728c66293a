"""Tasks: background work a user asked for, with status and progress they can follow.

The row is the truth for what a user sees; the job queue only carries the task id.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from tenantry.domain.errors import DomainError


class TaskStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
# Why a task ended without its handler saying so.
WORKER_LOST = "The worker running this task stopped responding."
TENANT_SUSPENDED = "The tenant was suspended."


class Task(msgspec.Struct, kw_only=True, frozen=True):
    id: UUID
    tenant_id: UUID
    type: str
    status: TaskStatus
    progress: int
    input_files: list[UUID]
    output_files: list[UUID]
    config: dict[str, Any]
    result: dict[str, Any] | None
    error_message: str | None
    # Attempts started so far, less one (0 before the first too); the row counts them, not the
    # queue, so an attempt killed with its worker still counts.
    retry_count: int
    created_by: UUID | None
    cancel_requested: bool
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

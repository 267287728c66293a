"""Background tasks: submitted by the API, run by workers, followed by users through the row.

This module holds what users call (submit, read, list, cancel, logs, stats) and what handlers
are given (the registry and a task's context). The worker's side is ``runner``, the platform's
sweeps ``maintenance``, and each built-in handler a module of ``handlers``.
"""

from __future__ import annotations

import asyncio
import builtins
import inspect
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol
from uuid import UUID

import msgspec

from tenantry.application.audit import changed, record, snapshot
from tenantry.application.files import Files, UploadFile
from tenantry.application.ownership import SYSTEM_USER, require_may_destroy
from tenantry.domain.auth import Actor
from tenantry.domain.errors import Invalid, NotFound, found
from tenantry.domain.files import FilePolicy, FileRepository, ObjectStorage, StoredFile
from tenantry.domain.ports import Clock, UnitOfWork
from tenantry.domain.repository import ListQuery, given
from tenantry.domain.tasks import (
    TENANT_SUSPENDED,
    JobQueue,
    Task,
    TaskCancelled,
    TaskFinished,
    TaskLimits,
    TaskLog,
    TaskRepository,
    TaskStats,
    TaskStatus,
    TooManyPendingTasks,
)
from tenantry.domain.tenants import Tenant, TenantStatus

UnitOfWorkFactory = Callable[[], AbstractAsyncContextManager[UnitOfWork]]


class TaskContext:
    """What a handler gets: its tenant and inputs, progress, cancellation and the stores."""

    def __init__(
        self,
        task: Task,
        *,
        units: UnitOfWorkFactory,
        storage: ObjectStorage,
        clock: Clock,
        file_policy: FilePolicy,
    ) -> None:
        self.task = task
        self.tenant_id = task.tenant_id
        self.units = units
        self.storage = storage
        self.clock = clock
        self.file_policy = file_policy
        self.output_files: list[UUID] = []
        # Its lines carry the task's id, tenant and request id (the worker binds them).
        self.log = logging.getLogger(f"tenantry.tasks.{task.type}")
        # The latest progress the handler reported, and a signal that it rose: the runner
        # writes it to the row (``runner.Pulse``), never the handler's own call.
        self.reported = task.progress
        self.reports = asyncio.Event()

    async def progress(self, percent: int) -> None:
        """Report progress. It reaches the row within ``runner.PROGRESS_INTERVAL_S`` and with
        the attempt's end, never going backwards: a chatty handler costs no more."""
        percent = max(0, min(100, percent))
        if percent > self.reported:
            self.reported = percent
            self.reports.set()

    def files(self, uow: UnitOfWork) -> Files:
        return Files(uow, storage=self.storage, clock=self.clock, policy=self.file_policy)

    async def input_file(self, file_id: UUID) -> StoredFile:
        """One of the tenant's files (the task's ``input_files``), as stored; NotFound once
        deleted."""
        async with self.units() as uow:
            stored = await uow.repository(FileRepository, self.tenant_id).get(file_id)
        return found(stored, f"Input file {file_id} is gone.")

    def read(self, file: StoredFile) -> AsyncIterator[bytes]:
        """The file's bytes from storage, a chunk at a time."""
        return self.storage.get(file.storage_key)

    async def write_output(
        self,
        filename: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        policy: FilePolicy | None = None,
    ) -> StoredFile:
        """Store ``chunks`` as a new file of the tenant, written by the system on the task's
        behalf and held to the tenant's file policy (``policy`` instead, when given) and
        quota, and list it in the task's ``output_files``. The policy's smallest image size
        is for uploads: a task may well make small images (thumbnails)."""
        actor = Actor(
            user_id=self.task.created_by or SYSTEM_USER, tenant_id=self.tenant_id, roles=()
        )
        held_to = msgspec.structs.replace(policy or self.file_policy, min_width=1, min_height=1)
        async with self.units() as uow:
            upload = UploadFile(self.files(uow), policy=held_to, system=True)
            stored = await upload(
                actor, filename=filename, claimed_type=content_type, chunks=chunks
            )
        self.output_files.append(stored.id)
        return stored

    async def check_cancelled(self) -> None:
        """Stop here if the user cancelled or the tenant was suspended: handlers call this
        between steps."""
        async with self.units() as uow:
            current = await uow.repository(TaskRepository, self.tenant_id).get(self.task.id)
            tenant = await uow.tenants.get(self.tenant_id)
        if not runs_tasks(tenant):
            raise TaskCancelled(TENANT_SUSPENDED)
        if current is None or current.cancel_requested:
            raise TaskCancelled


def runs_tasks(tenant: Tenant | None) -> bool:
    return tenant is not None and tenant.status == TenantStatus.ACTIVE


class TaskHandler(Protocol):
    """A task type: its name (``type``), the msgspec Struct its ``config`` must match, and
    ``run``, which gets the task's context and its config, and returns the task's result (a
    JSON object). Optional: ``input_types``, the content types its input files may have (any
    when absent or empty), and the fields of :class:`TaskPolicy`. docs/tasks.md, "Write a task
    handler"."""

    type: str
    config_type: builtins.type[msgspec.Struct]

    async def run(self, context: TaskContext, config: Any) -> dict[str, Any]: ...


class TaskPolicy(msgspec.Struct, frozen=True):
    """How a type's attempts run, from its handler's attributes of the same names; None takes
    the worker's setting. Each attempt may run ``timeout_seconds`` (then it fails, and is not
    retried); one that raises RetryableError is retried until ``max_attempts`` attempts, after
    ``backoff_seconds``, doubled each time. Attempts that die with their worker count against
    TENANTRY_TASK_MAX_ATTEMPTS whatever the type."""

    timeout_seconds: float | None = None
    max_attempts: int | None = None
    backoff_seconds: float | None = None


# Bounds of a handler's policy: the settings' own.
MAX_ATTEMPTS_LIMIT = 20


# Dotted lower-case words: "file.inspect", "image.thumbnail".
TASK_TYPE = re.compile(r"^[a-z][a-z0-9_]*(?:[.-][a-z0-9_]+)*$")
TASK_TYPE_MAX = 100


class HandlerError(Exception):
    """A handler that cannot be registered: its type is taken or malformed, or it is not a
    handler at all. Raised when the registry is built, so a worker or API never starts with
    it."""


class Registry:
    """Handlers by task type; each brings the schema its config must match."""

    def __init__(self, handlers: Sequence[TaskHandler]) -> None:
        self.handlers: dict[str, TaskHandler] = {}
        for handler in handlers:
            check_handler(handler)
            taken = self.handlers.get(handler.type)
            if taken is not None:
                raise HandlerError(
                    f"Task type {handler.type!r} is claimed twice: by {describe(taken)} and by "
                    f"{describe(handler)}."
                )
            self.handlers[handler.type] = handler

    def handler(self, task_type: str) -> TaskHandler:
        handler = self.handlers.get(task_type)
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            raise Invalid("Unknown task type.", fields={"type": f"must be one of {known}"})
        return handler

    def submittable(self, task_type: str) -> None:
        """Refuse a type that a use case of its own starts (it checks more than a submit
        does: who may ask, what else to record): its handler names that use case's endpoint
        in ``started_by``."""
        started_by = getattr(self.handler(task_type), "started_by", None)
        if started_by is not None:
            raise Invalid(
                "This task type is not submitted here.", fields={"type": f"use {started_by}"}
            )

    def config(self, task_type: str, config: dict[str, Any]) -> Any:
        """The config as the handler's Struct; Invalid naming the field (``config.width``)
        when it does not match."""
        try:
            return msgspec.convert(config, self.handler(task_type).config_type)
        except msgspec.ValidationError as error:
            raise Invalid(
                "The task's config is not valid.", fields=dict([config_problem(str(error))])
            ) from None

    def input_types(self, task_type: str) -> frozenset[str]:
        """The content types the type's input files may have; empty for any."""
        return frozenset(getattr(self.handler(task_type), "input_types", None) or ())

    def policy(self, task_type: str) -> TaskPolicy:
        return policy_of(self.handler(task_type))


def policy_of(handler: object) -> TaskPolicy:
    return TaskPolicy(
        **{name: getattr(handler, name, None) for name in TaskPolicy.__struct_fields__}
    )


# msgspec's wording: "Expected `int`, got `str` - at `$.width`", "Object missing required
# field `width`", "Object contains unknown field `colour` - at `$.resize`".
_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_FIELD = re.compile(r"^Object (?:missing required|contains unknown) field `(?P<name>[^`]+)`")


def config_problem(error: str) -> tuple[str, str]:
    """msgspec's validation error as the config field it names (``config.resize.width``) and
    what is wrong with it."""
    found = _AT.match(error)
    message, path = (found["message"], found["path"] or "") if found else (error, "")
    if named := _FIELD.match(message):
        path = f"{path}.{named['name']}"
    return f"config{path}", message


def check_handler(handler: object) -> None:
    """Raise HandlerError unless ``handler`` has what TaskHandler asks for."""
    task_type = getattr(handler, "type", None)
    if (
        not isinstance(task_type, str)
        or len(task_type) > TASK_TYPE_MAX
        or not TASK_TYPE.match(task_type)
    ):
        raise HandlerError(
            f"{describe(handler)}: type must be dotted lower-case words (as image.thumbnail), "
            f"at most {TASK_TYPE_MAX} characters; got {task_type!r}."
        )
    config_type = getattr(handler, "config_type", None)
    if not (isinstance(config_type, type) and issubclass(config_type, msgspec.Struct)):
        raise HandlerError(f"{describe(handler)}: config_type must be a msgspec.Struct class.")
    if not inspect.iscoroutinefunction(getattr(handler, "run", None)):
        raise HandlerError(f"{describe(handler)}: run must be an async method.")
    input_types = getattr(handler, "input_types", None) or ()
    if isinstance(input_types, str) or not all(isinstance(t, str) for t in input_types):
        raise HandlerError(f"{describe(handler)}: input_types must be content types, as image/png.")
    policy = policy_of(handler)
    for name in ("timeout_seconds", "backoff_seconds"):
        value = getattr(policy, name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
        ):
            raise HandlerError(f"{describe(handler)}: {name} must be a positive number.")
    attempts = policy.max_attempts
    if attempts is not None and (
        isinstance(attempts, bool)
        or not isinstance(attempts, int)
        or not 1 <= attempts <= MAX_ATTEMPTS_LIMIT
    ):
        raise HandlerError(
            f"{describe(handler)}: max_attempts must be a whole number from 1 to "
            f"{MAX_ATTEMPTS_LIMIT}."
        )


def describe(handler: object) -> str:
    kind = type(handler)
    return f"{kind.__module__}.{kind.__qualname__}"


# What the trail shows of a task: its type and status, never its config, result or error.
SHOWN = ("type", "status")
CANCEL_SHOWN = ("status", "cancel_requested")


class SubmitTask:
    def __init__(
        self, uow: UnitOfWork, queue: JobQueue, registry: Registry, limits: TaskLimits
    ) -> None:
        self.uow = uow
        self.queue = queue
        self.registry = registry
        self.limits = limits
        # The submitting tenant's own, once add() has read them: the queue holds it to them.
        self.tenant_limits = limits

    async def __call__(
        self,
        actor: Actor,
        *,
        task_type: str,
        config: dict[str, Any],
        input_files: list[UUID],
        request_id: str | None,
    ) -> Task:
        self.registry.submittable(task_type)
        async with self.uow:
            task = await self.add(
                actor, task_type=task_type, config=config, input_files=input_files
            )
            await self.uow.commit()
        await self.enqueue(task, request_id=request_id)
        return task

    async def add(
        self, actor: Actor, *, task_type: str, config: dict[str, Any], input_files: list[UUID]
    ) -> Task:
        """The task's row and its event, in the open unit of work, for the caller to commit:
        a use case that starts a task of its own commits them with its own change."""
        self.registry.config(task_type, config)
        tasks = self.uow.repository(TaskRepository, actor.tenant_id)
        tenant = await self.uow.tenants.get(actor.tenant_id)
        self.tenant_limits = self.limits.over(tenant.settings if tenant else {})
        allowed = self.tenant_limits.pending
        if allowed is not None and await tasks.count_pending() >= allowed:
            raise TooManyPendingTasks(allowed)
        accepted = self.registry.input_types(task_type)
        files = self.uow.repository(FileRepository, actor.tenant_id)
        for file_id in input_files:
            stored = await files.get(file_id)
            if stored is None:
                raise Invalid("Unknown input file.", fields={"input_files": f"no file {file_id}"})
            if accepted and stored.content_type not in accepted:
                raise Invalid(
                    f"A {task_type} task does not take this file.",
                    fields={
                        "input_files": f"file {file_id} is {stored.content_type}; "
                        f"{task_type} takes {', '.join(sorted(accepted))}"
                    },
                )
        task = await tasks.add(
            type=task_type,
            config=config,
            input_files=list(input_files),
            created_by=actor.user_id,
        )
        # The type only: a config's values are the user's data, not the trail's.
        await record(
            self.uow,
            actor,
            "task.submitted",
            ("task", task.id),
            changes={"after": snapshot(task, SHOWN)},
        )
        return task

    async def enqueue(self, task: Task, *, request_id: str | None) -> None:
        """Once the task's row is committed: a rolled-back request never runs a job. Should
        this enqueue be lost, the worker's reconciler finds the pending row."""
        # 0: none, which also lifts one the tenant had.
        await self.queue.enqueue(
            task, request_id=request_id, running_limit=self.tenant_limits.running or 0
        )


class GetTask:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, actor: Actor, task_id: UUID) -> Task:
        async with self.uow:
            task = await self.uow.repository(TaskRepository, actor.tenant_id).get(task_id)
        if task is None:
            raise NotFound("No such task.")
        return task


class ListTasks:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(
        self, actor: Actor, query: ListQuery, *, status: TaskStatus | None, task_type: str | None
    ) -> tuple[Sequence[Task], int]:
        async with self.uow:
            tasks = self.uow.repository(TaskRepository, actor.tenant_id)
            return await tasks.list(query, **given(status=status, type=task_type))


class CancelTask:
    def __init__(self, uow: UnitOfWork, clock: Clock) -> None:
        self.uow = uow
        self.clock = clock

    async def __call__(self, actor: Actor, task_id: UUID) -> Task:
        async with self.uow:
            tasks = self.uow.repository(TaskRepository, actor.tenant_id)
            existing = found(await tasks.get(task_id), "No such task.")
            require_may_destroy(actor, existing.created_by, "this task")
            task = await tasks.cancel(task_id, self.clock.now())
            if task is None:
                raise TaskFinished("The task has already finished.")
            # A pending task ends here; a running one is asked to stop, and ends by its worker.
            await record(
                self.uow,
                actor,
                "task.cancelled",
                ("task", task_id),
                changes=changed(existing, task, shown=CANCEL_SHOWN, hidden=()),
            )
            await self.uow.commit()
        return task


class TaskLogs:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, actor: Actor, task_id: UUID) -> Sequence[TaskLog]:
        async with self.uow:
            tasks = self.uow.repository(TaskRepository, actor.tenant_id)
            if await tasks.get(task_id) is None:
                raise NotFound("No such task.")
            return await tasks.logs(task_id)


class GetTaskStats:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, actor: Actor) -> TaskStats:
        async with self.uow:
            return await self.uow.repository(TaskRepository, actor.tenant_id).stats()

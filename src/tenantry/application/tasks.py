"""Background tasks: submitted by the API, run by workers, followed by users through the row."""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any, Protocol
from uuid import UUID

import msgspec

from tenantry.application.files import Files, UploadFile
from tenantry.application.ownership import SYSTEM_USER as SYSTEM
from tenantry.application.ownership import require_may_destroy
from tenantry.domain.auth import Actor
from tenantry.domain.documents import Document
from tenantry.domain.errors import Invalid, NotFound
from tenantry.domain.files import SNIFF_BYTES, ZIP, FilePolicy, image_size, sniff
from tenantry.domain.ids import new_id
from tenantry.domain.ports import Clock, JobQueue, ObjectStorage, TaskMetrics, UnitOfWork
from tenantry.domain.projects import ListQuery
from tenantry.domain.tasks import (
    TENANT_SUSPENDED,
    WORKER_LOST,
    RetryableError,
    Task,
    TaskCancelled,
    TaskFinished,
    TaskLog,
    TaskStats,
    TaskStatus,
)
from tenantry.domain.tenants import Tenant, TenantStatus

UnitOfWorkFactory = Callable[[], AbstractAsyncContextManager[UnitOfWork]]
# Progress is written at most this often (and always at 100): a chatty handler costs no more.
PROGRESS_INTERVAL_S = 0.25


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
        self._written = task.progress
        self._written_at = 0.0

    async def progress(self, percent: int) -> None:
        percent = max(0, min(100, percent))
        now = time.monotonic()
        if percent <= self._written or (
            percent < 100 and now - self._written_at < PROGRESS_INTERVAL_S
        ):
            return
        async with self.units() as uow:
            await uow.tasks(self.tenant_id).progress(self.task.id, percent)
            await uow.commit()
        self._written, self._written_at = percent, now

    def files(self, uow: UnitOfWork) -> Files:
        return Files(uow, storage=self.storage, clock=self.clock, policy=self.file_policy)

    async def check_cancelled(self) -> None:
        """Stop here if the user cancelled or the tenant was suspended: handlers call this
        between steps."""
        async with self.units() as uow:
            current = await uow.tasks(self.tenant_id).get(self.task.id)
            tenant = await uow.tenants.get(self.tenant_id)
        if not runs_tasks(tenant):
            raise TaskCancelled(TENANT_SUSPENDED)
        if current is None or current.cancel_requested:
            raise TaskCancelled


def runs_tasks(tenant: Tenant | None) -> bool:
    return tenant is not None and tenant.status == TenantStatus.ACTIVE


class TaskHandler(Protocol):
    type: str
    config_type: builtins.type[msgspec.Struct]

    async def run(self, context: TaskContext, config: Any) -> dict[str, Any]: ...


class Registry:
    """Handlers by task type; each brings the schema its config must match."""

    def __init__(self, handlers: list[TaskHandler]) -> None:
        self.handlers = {handler.type: handler for handler in handlers}

    def handler(self, task_type: str) -> TaskHandler:
        handler = self.handlers.get(task_type)
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            raise Invalid("Unknown task type.", fields={"type": f"must be one of {known}"})
        return handler

    def config(self, task_type: str, config: dict[str, Any]) -> Any:
        try:
            return msgspec.convert(config, self.handler(task_type).config_type)
        except msgspec.ValidationError as error:
            raise Invalid(
                "The task's config is not valid.", fields={"config": str(error)}
            ) from None


class SubmitTask:
    def __init__(self, uow: UnitOfWork, queue: JobQueue, registry: Registry) -> None:
        self.uow = uow
        self.queue = queue
        self.registry = registry

    async def __call__(
        self,
        actor: Actor,
        *,
        task_type: str,
        config: dict[str, Any],
        input_files: list[UUID],
        request_id: str | None,
    ) -> Task:
        self.registry.config(task_type, config)
        async with self.uow:
            files = self.uow.files(actor.tenant_id)
            for file_id in input_files:
                if await files.get(file_id) is None:
                    raise Invalid(
                        "Unknown input file.", fields={"input_files": f"no file {file_id}"}
                    )
            task = await self.uow.tasks(actor.tenant_id).add(
                task_id=new_id(),
                task_type=task_type,
                config=config,
                input_files=input_files,
                created_by=actor.user_id,
            )
            await self.uow.commit()
        # Enqueued only once the row is committed: a rolled-back request never runs a job.
        # Should this enqueue be lost, the worker's reconciler finds the pending row.
        await self.queue.enqueue(task, request_id=request_id)
        return task


class GetTask:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, actor: Actor, task_id: UUID) -> Task:
        async with self.uow:
            task = await self.uow.tasks(actor.tenant_id).get(task_id)
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
            tasks = self.uow.tasks(actor.tenant_id)
            return await tasks.list(query, status=status, task_type=task_type)


class CancelTask:
    def __init__(self, uow: UnitOfWork, clock: Clock) -> None:
        self.uow = uow
        self.clock = clock

    async def __call__(self, actor: Actor, task_id: UUID) -> Task:
        async with self.uow:
            tasks = self.uow.tasks(actor.tenant_id)
            found = await tasks.get(task_id)
            if found is None:
                raise NotFound("No such task.")
            require_may_destroy(actor, found.created_by, "this task")
            task = await tasks.cancel(task_id, self.clock.now())
            if task is None:
                raise TaskFinished("The task has already finished.")
            await self.uow.commit()
        return task


class TaskLogs:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, actor: Actor, task_id: UUID) -> Sequence[TaskLog]:
        async with self.uow:
            tasks = self.uow.tasks(actor.tenant_id)
            if await tasks.get(task_id) is None:
                raise NotFound("No such task.")
            return await tasks.logs(task_id)


class GetTaskStats:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, actor: Actor) -> TaskStats:
        async with self.uow:
            return await self.uow.tasks(actor.tenant_id).stats()


class NoTaskMetrics:
    """Records nothing: for a RunTask that no dashboard watches."""

    def started(self, task_type: str) -> None:
        pass

    def succeeded(self, task_type: str, seconds: float) -> None:
        pass

    def failed(self, task_type: str, seconds: float) -> None:
        pass

    def retried(self, task_type: str, seconds: float) -> None:
        pass

    def cancelled(self, task_type: str, seconds: float) -> None:
        pass


class RunTask:
    """One attempt at a task, in a worker. Returns the delay before a retry, or None."""

    def __init__(
        self,
        *,
        units: UnitOfWorkFactory,
        registry: Registry,
        storage: ObjectStorage,
        clock: Clock,
        file_policy: FilePolicy,
        max_attempts: int,
        backoff: timedelta,
        heartbeat: timedelta,
        metrics: TaskMetrics | None = None,
    ) -> None:
        self.units = units
        self.registry = registry
        self.storage = storage
        self.clock = clock
        self.file_policy = file_policy
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.heartbeat = heartbeat
        self.metrics: TaskMetrics = metrics or NoTaskMetrics()

    async def __call__(self, tenant_id: UUID, task_id: UUID) -> timedelta | None:
        async with self.units() as uow:
            tasks = uow.tasks(tenant_id)
            if runs_tasks(await uow.tenants.get(tenant_id)):
                task = await tasks.start(
                    task_id, at=self.clock.now(), max_attempts=self.max_attempts
                )
            else:
                # Suspension ends what was queued; re-activation runs nothing by itself.
                await tasks.finish(
                    task_id,
                    TaskStatus.CANCELLED,
                    at=self.clock.now(),
                    error_message=TENANT_SUSPENDED,
                )
                task = None
            await uow.commit()
        if task is None:
            return None  # finished, cancelled or gone: at-least-once delivery, run at most once
        # The row's count, not the queue's: a re-enqueued job starts again at arq's job_try 1.
        attempt = task.retry_count + 1
        self.metrics.started(task.type)
        started = time.perf_counter()
        context = TaskContext(
            task,
            units=self.units,
            storage=self.storage,
            clock=self.clock,
            file_policy=self.file_policy,
        )
        status, result, error = TaskStatus.COMPLETED, None, None
        retry: timedelta | None = None
        beating = asyncio.create_task(self._beat(tenant_id, task_id))
        try:
            handler = self.registry.handler(task.type)
            result = await handler.run(context, self.registry.config(task.type, task.config))
        except TaskCancelled as cancelled:
            status, error = TaskStatus.CANCELLED, str(cancelled) or None
        except RetryableError as failure:
            error = str(failure) or type(failure).__name__
            status = TaskStatus.FAILED
            if attempt < self.max_attempts:
                retry = self.backoff * 2 ** (attempt - 1)
        except Exception as failure:  # noqa: BLE001 - any other failure is permanent: record it
            status, error = TaskStatus.FAILED, str(failure) or type(failure).__name__
        finally:
            beating.cancel()
        seconds = time.perf_counter() - started
        self._record(task.type, status, retry, seconds)
        duration_ms = round(seconds * 1000, 2)
        async with self.units() as uow:
            tasks = uow.tasks(tenant_id)
            await tasks.add_log(
                task_id,
                attempt=attempt,
                operation=task.type,
                success=status == TaskStatus.COMPLETED,
                duration_ms=duration_ms,
                error=error,
            )
            if retry is not None:
                await tasks.back_to_pending(task_id, error_message=error or "retrying")
            else:
                await tasks.finish(
                    task_id,
                    status,
                    at=self.clock.now(),
                    result=result,
                    error_message=error,
                    output_files=context.output_files,
                )
            await uow.commit()
        return retry

    def _record(
        self, task_type: str, status: TaskStatus, retry: timedelta | None, seconds: float
    ) -> None:
        if retry is not None:
            self.metrics.retried(task_type, seconds)
        elif status == TaskStatus.COMPLETED:
            self.metrics.succeeded(task_type, seconds)
        elif status == TaskStatus.CANCELLED:
            self.metrics.cancelled(task_type, seconds)
        else:
            self.metrics.failed(task_type, seconds)

    async def _beat(self, tenant_id: UUID, task_id: UUID) -> None:
        """Tell the reaper this attempt is alive, however long the handler goes quiet."""
        while True:
            await asyncio.sleep(self.heartbeat.total_seconds())
            async with self.units() as uow:
                await uow.tasks(tenant_id).heartbeat(task_id)
                await uow.commit()


class ReapTasks:
    """Tasks stranded in processing by a dead worker go back to the queue, or fail once their
    attempts are spent: nothing stays in processing forever."""

    def __init__(
        self,
        *,
        units: UnitOfWorkFactory,
        queue: JobQueue,
        clock: Clock,
        stale_after: timedelta,
        max_attempts: int,
    ) -> None:
        self.units = units
        self.queue = queue
        self.clock = clock
        self.stale_after = stale_after
        self.max_attempts = max_attempts

    async def __call__(self, batch: int = 500) -> int:
        reaped, offset, requeue = 0, 0, []
        now = self.clock.now()
        async with self.units() as uow:
            while True:
                tenants, total = await uow.tenants.list(limit=batch, offset=offset)
                for tenant in tenants:
                    tasks = uow.tasks(tenant.id)
                    for task in await tasks.stale(now - self.stale_after, limit=batch):
                        if task.retry_count + 1 >= self.max_attempts:
                            await tasks.finish(
                                task.id, TaskStatus.FAILED, at=now, error_message=WORKER_LOST
                            )
                        else:
                            await tasks.back_to_pending(task.id, error_message="worker lost")
                            requeue.append(task)
                        reaped += 1
                    await uow.commit()
                offset += batch
                if offset >= total:
                    break
        for task in requeue:
            await self.queue.enqueue(task, request_id=None)
        return reaped


class ReconcileTasks:
    """Enqueue pending tasks that no queue seems to hold: the other half of "enqueue after
    commit". A task whose enqueue was lost (a crash, Redis down) still runs."""

    def __init__(
        self, *, units: UnitOfWorkFactory, queue: JobQueue, clock: Clock, stale_after: timedelta
    ) -> None:
        self.units = units
        self.queue = queue
        self.clock = clock
        self.stale_after = stale_after

    async def __call__(self, batch: int = 500) -> int:
        enqueued, offset = 0, 0
        cutoff = self.clock.now() - self.stale_after
        async with self.units() as uow:
            while True:
                tenants, total = await uow.tenants.list(limit=batch, offset=offset)
                for tenant in tenants:
                    query = ListQuery(limit=100, order_by="created_at", created_before=cutoff)
                    stale, _ = await uow.tasks(tenant.id).list(
                        query, status=TaskStatus.PENDING, task_type=None
                    )
                    for task in stale:
                        await self.queue.enqueue(task, request_id=None)
                        enqueued += 1
                offset += batch
                if offset >= total:
                    return enqueued


# Built-in handlers.


class NoopConfig(msgspec.Struct, forbid_unknown_fields=True):
    pass


class Noop:
    """Task ``noop``: does nothing, successfully. Operators use it to see that workers run
    tasks end to end; the task benchmark measures the pipeline with it."""

    type: str = "noop"
    config_type: builtins.type[msgspec.Struct] = NoopConfig

    async def run(self, context: TaskContext, config: NoopConfig) -> dict[str, Any]:  # noqa: ARG002 - nothing to configure
        await context.progress(100)
        return {}


# Hashing a chunk this large takes milliseconds: it goes to a thread (hashlib lets go of the
# GIL), so the loop's heartbeats and requests go on. Smaller ones cost less than the hop.
HASH_IN_THREAD_BYTES = 1024 * 1024


class InspectConfig(msgspec.Struct, forbid_unknown_fields=True):
    """file.inspect takes its files from the task's input_files; no options yet."""


class FileInspect:
    """Task ``file.inspect``: read each input file back from storage and record its checksum,
    sniffed type and image size in the file's metadata."""

    type: str = "file.inspect"
    config_type: builtins.type[msgspec.Struct] = InspectConfig

    async def run(self, context: TaskContext, config: InspectConfig) -> dict[str, Any]:  # noqa: ARG002 - no options yet
        inputs = context.task.input_files
        if not inputs:
            raise Invalid(
                "file.inspect needs input_files.", fields={"input_files": "must not be empty"}
            )
        report: dict[str, Any] = {}
        for index, file_id in enumerate(inputs):
            await context.check_cancelled()
            async with context.units() as uow:
                found = await uow.files(context.tenant_id).get(file_id)
            if found is None:
                raise NotFound(f"Input file {file_id} is gone.")
            digest, head, size = hashlib.sha256(), bytearray(), 0
            async for chunk in context.storage.get(found.storage_key):
                if len(chunk) >= HASH_IN_THREAD_BYTES:
                    await asyncio.to_thread(digest.update, chunk)
                else:
                    digest.update(chunk)
                head += chunk[: SNIFF_BYTES - len(head)]
                size += len(chunk)
                done = (index + size / max(found.size, 1)) / len(inputs)
                await context.progress(int(done * 99))
            kind = sniff(bytes(head))
            dimensions = image_size(kind, bytes(head))
            inspection = {
                "sha256": digest.hexdigest(),
                "size": size,
                "content_type": kind,
                "intact": digest.hexdigest() == found.sha256 and size == found.size,
            }
            if dimensions:
                inspection["width"], inspection["height"] = dimensions
            async with context.units() as uow:
                await uow.files(context.tenant_id).set_metadata(
                    file_id, {**found.metadata, "inspection": inspection}
                )
                await uow.commit()
            report[str(file_id)] = inspection
        await context.progress(100)
        return {"files": report}


class ExportConfig(msgspec.Struct, forbid_unknown_fields=True):
    project_id: UUID


class ProjectExport:
    """Task ``project.export``: a zip of a project's documents (Markdown) and a manifest,
    stored as a new file of the tenant and listed in the task's output_files."""

    type: str = "project.export"
    config_type: builtins.type[msgspec.Struct] = ExportConfig
    page = 100

    async def run(self, context: TaskContext, config: ExportConfig) -> dict[str, Any]:
        async with context.units() as uow:
            project = await uow.projects(context.tenant_id).get(config.project_id)
        if project is None:
            raise NotFound("No such project.")
        # Spooled: small exports stay in memory, large ones go to a temporary file. One page of
        # documents at a time, compressed and written in a thread: memory holds a page, and the
        # loop (the API's too, under `tenantry dev`) serves requests and heartbeats meanwhile.
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as buffer:
            # Closing writes only the central directory: cheap enough for the loop.
            with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                project_json = msgspec.json.encode(project)
                await asyncio.to_thread(archive.writestr, "project.json", project_json)
                written = 0
                while True:
                    await context.check_cancelled()
                    query = ListQuery(limit=self.page, offset=written, order_by="created_at")
                    async with context.units() as uow:
                        documents = uow.documents(context.tenant_id)
                        batch, total = await documents.list(project.id, query)
                    await asyncio.to_thread(write_documents, archive, batch)
                    written += len(batch)
                    await context.progress(written * 75 // max(total, 1))
                    if not batch or written >= total:
                        break
            buffer.seek(0)

            async def chunks() -> AsyncIterator[bytes]:
                while chunk := await asyncio.to_thread(buffer.read, 256 * 1024):
                    yield chunk

            # The system writes this file on the task's behalf; only the tenant matters to it.
            actor = Actor(
                user_id=context.task.created_by or SYSTEM, tenant_id=context.tenant_id, roles=()
            )
            async with context.units() as uow:
                files = context.files(uow)
                stored = await UploadFile(files, policy=export_policy(files.policy))(
                    actor,
                    filename=f"{project.name}.zip",
                    claimed_type="application/zip",
                    chunks=chunks(),
                )
        context.output_files.append(stored.id)
        await context.progress(100)
        return {"file_id": str(stored.id), "documents": written, "size": stored.size}


def write_documents(archive: zipfile.ZipFile, documents: Sequence[Document]) -> None:
    for document in documents:
        archive.writestr(
            f"documents/{document.id}.md", f"# {document.title}\n\n{document.content}\n"
        )


def export_policy(policy: FilePolicy) -> FilePolicy:
    return msgspec.structs.replace(policy, allowed_types=policy.allowed_types | {ZIP})

"""Background tasks of the caller's tenant: submit, follow, cancel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIFormat, OpenAPIType, Reference, Schema
from litestar.params import FromPath, QueryParameter
from litestar.plugins import OpenAPISchemaPlugin
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.typing import FieldDefinition

from tenantry.application.tasks import (
    CancelTask,
    GetTask,
    GetTaskStats,
    ListTasks,
    Registry,
    SubmitTask,
    TaskLogs,
)
from tenantry.domain.auth import Actor
from tenantry.domain.tasks import FINISHED, Task, TaskStatus
from tenantry.presentation.bodies import NO_NUL, StrictJSONBody
from tenantry.presentation.errors import BODY_ERRORS, PARAMETER_ERRORS, problems
from tenantry.presentation.middleware import request_id_of
from tenantry.presentation.openapi import example_of
from tenantry.presentation.pagination import (
    CreatedAfter,
    CreatedBefore,
    Limit,
    Offset,
    Page,
    list_query,
    page,
)
from tenantry.presentation.reads import Read
from tenantry.presentation.security import SIGNED_IN_ERRORS

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator


class TaskCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A task to run: its type, the tenant's files it reads, and its type's config."""

    example: ClassVar[dict[str, Any]] = {"type": "file.inspect", "config": {}}

    type: Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=NO_NUL)]
    input_files: Annotated[list[UUID], msgspec.Meta(max_length=100)] = msgspec.field(
        default_factory=list
    )
    config: dict[str, Any] = msgspec.field(default_factory=dict)


class TaskTypesSchema(OpenAPISchemaPlugin):
    """Documents TaskCreate with the task types the app's registry knows: ``type`` one of
    those submitted here, ``config`` one of their handlers' Structs. Parsing still goes
    through TaskCreate, so an unknown type or a bad config answers 422 naming the field."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        return field_definition.annotation is TaskCreate

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        submitted = {
            task_type: handler
            for task_type, handler in sorted(self.registry.handlers.items())
            if getattr(handler, "started_by", None) is None
        }
        configs = [
            schema_creator.for_field_definition(
                FieldDefinition.from_annotation(handler.config_type)
            )
            for handler in submitted.values()
        ]
        accepts = "; ".join(
            f"{task_type}: {', '.join(sorted(types))}"
            for task_type in submitted
            if (types := self.registry.input_types(task_type))
        )
        # A component of its own, as every other body is.
        schema = schema_creator.schema_registry.get_schema_for_field_definition(field_definition)
        schema.title = "TaskCreate"
        schema.type = OpenAPIType.OBJECT
        schema.required = ["type"]
        schema.additional_properties = False
        schema.description = "A task of one of the known types (`tenantry tasks list`)."
        schema.examples = [example_of(TaskCreate)]
        schema.properties = {
            "type": Schema(type=OpenAPIType.STRING, enum=list(submitted)),
            "config": Schema(
                any_of=configs,
                description="The config of the task's type: "
                + "; ".join(
                    f"{task_type}: {handler.config_type.__name__}"
                    for task_type, handler in submitted.items()
                ),
            ),
            "input_files": Schema(
                type=OpenAPIType.ARRAY,
                items=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.UUID),
                max_items=100,
                description="Files of the tenant"
                + (f"; the types they may have, by task type: {accepts}" if accepts else ""),
            ),
        }
        reference = schema_creator.schema_registry.get_reference_for_field_definition(
            field_definition
        )
        return reference or schema  # type: ignore[return-value]


class TaskRead(Read):
    """A task: its type, status, progress, files, config, and its result once finished."""

    example: ClassVar[dict[str, Any]] = {
        "type": "file.inspect",
        "config": {},
        "status": "failed",
        "error_message": "the file is not a readable PDF",
        "result": {},
    }

    id: UUID
    type: str
    status: TaskStatus
    progress: int
    input_files: list[UUID]
    output_files: list[UUID]
    config: dict[str, Any]
    result: dict[str, Any] | None
    error_message: str | None
    retry_count: int
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class TaskEvent(msgspec.Struct):
    """One server-sent event of a task's stream."""

    example: ClassVar[dict[str, Any]] = {
        "data": '{"id": "3c9a7e21-4f6b-4d8a-9e2c-5b1d0f7a8c36", "status": "running", "progress": 40}'
    }

    event: Literal["task"]
    # The task as JSON, as GET /api/v1/tasks/{task_id} answers it.
    data: str


class TaskLogRead(Read):
    """One step of a task's attempt: what it did, whether it succeeded, how long it took."""

    example: ClassVar[dict[str, Any]] = {
        "operation": "handler",
        "success": False,
        "error": "storage timed out",
        "duration_ms": 30012.5,
    }

    attempt: int
    operation: str
    success: bool
    duration_ms: float
    error: str | None
    created_at: datetime


class TaskStatsRead(Read):
    """The tenant's tasks by status and by type, and how long finished ones took."""

    example: ClassVar[dict[str, Any]] = {
        "by_status": {"completed": 120, "failed": 3, "processing": 1},
        "by_type": {"file.inspect": 80, "project.export": 44},
        "mean_duration_ms": 840.5,
        "p95_duration_ms": 2310.0,
    }

    by_status: dict[str, int]
    by_type: dict[str, int]
    mean_duration_ms: float | None
    p95_duration_ms: float | None


TASKS_PATH = "/api/v1/tasks"
# What a 202 that started a task answers besides the task: where to follow it.
LOCATION = [
    ResponseHeader(
        name="Location", description="The task, to follow its progress", documentation_only=True
    )
]


def accepted(task: Task) -> Response[TaskRead]:
    """The answer of every request that starts a task: 202, the task, and where to follow it."""
    return Response(
        TaskRead.of(task), status_code=202, headers={"Location": f"{TASKS_PATH}/{task.id}"}
    )


# Rows are polled, not pushed: simple, and the row stays the one truth.
EVENTS_POLL_SECONDS = 0.5
EVENTS_MAX_SECONDS = 600

StatusFilter = Annotated[
    TaskStatus | None,
    QueryParameter(
        description="Only tasks in this status.",
        # The TaskStatus component or null, as generators name it; Litestar writes an inline
        # nullable enum, which they turn into one model per branch (`list_tasks_status_type_1`).
        schema_extra={
            "type": None,
            "enum": None,
            "one_of": None,
            "any_of": [
                Reference(ref="#/components/schemas/TaskStatus"),
                Schema(type=OpenAPIType.NULL),
            ],
        },
    ),
]
TypeFilter = Annotated[
    str | None, QueryParameter(max_length=100, pattern=NO_NUL, description="Only this type.")
]


class TaskPage(Page[TaskRead]):
    """A page of tasks."""

    items: list[TaskRead]


class TaskController(Controller):
    path = TASKS_PATH
    tags = ["tasks"]

    @post(
        status_code=202,
        response_headers=LOCATION,
        summary="Submit a task",
        description="An unknown type or a config its handler does not accept is 422.",
        responses=problems(*SIGNED_IN_ERRORS, *BODY_ERRORS, 404),
    )
    async def submit_task(
        self,
        request: Request[Any, Any, Any],
        data: StrictJSONBody[TaskCreate],
        actor: NamedDependency[Actor],
        submit_task: NamedDependency[SubmitTask],
    ) -> Response[TaskRead]:
        task = await submit_task(
            actor,
            task_type=data.type,
            config=data.config,
            input_files=data.input_files,
            request_id=request_id_of(request.scope) or None,
        )
        return accepted(task)

    @get(summary="Tasks of your tenant", responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS))
    async def list_tasks(
        self,
        actor: NamedDependency[Actor],
        list_tasks: NamedDependency[ListTasks],
        limit: Limit = 20,
        offset: Offset = 0,
        status: StatusFilter = None,
        type: TypeFilter = None,
        created_after: CreatedAfter = None,
        created_before: CreatedBefore = None,
    ) -> TaskPage:
        query = list_query(
            limit, offset, created_after=created_after, created_before=created_before
        )
        found = await list_tasks(actor, query, status=status, task_type=type)
        return page(TaskPage, found, limit, offset)

    @get(
        "/stats",
        operation_id="getTaskStats",
        summary="Counts by status and type, mean and p95 duration of completed tasks",
        responses=problems(*SIGNED_IN_ERRORS),
    )
    async def task_stats(
        self, actor: NamedDependency[Actor], task_stats: NamedDependency[GetTaskStats]
    ) -> TaskStatsRead:
        return TaskStatsRead.of(await task_stats(actor))

    @get(
        "/{task_id:uuid}",
        summary="A task: status, progress, result",
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 404),
    )
    async def get_task(
        self,
        task_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        get_task: NamedDependency[GetTask],
    ) -> TaskRead:
        return TaskRead.of(await get_task(actor, task_id))

    @post(
        "/{task_id:uuid}/cancel",
        status_code=202,
        summary="Cancel a task (its submitter, admins and owners; a finished one is 409)",
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 403, 404, 409),
    )
    async def cancel_task(
        self,
        task_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        cancel_task: NamedDependency[CancelTask],
    ) -> TaskRead:
        return TaskRead.of(await cancel_task(actor, task_id))

    @get(
        "/{task_id:uuid}/events",
        operation_id="streamTaskEvents",
        summary="Status and progress as server-sent events",
        description="One `task` event (the task as JSON) now and on every change; the stream "
        "ends when the task finishes, or after ten minutes.",
        responses={
            200: ResponseSpec(
                TaskEvent,
                description="The event stream",
                media_type="text/event-stream",
                generate_examples=False,
            ),
            **problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 404),
        },
    )
    async def task_events(
        self,
        task_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        get_task: NamedDependency[GetTask],
    ) -> ServerSentEvent:
        first = await get_task(actor, task_id)  # 404 before the stream starts

        async def changes() -> AsyncIterator[ServerSentEventMessage]:
            task, seen = first, None
            deadline = time.monotonic() + EVENTS_MAX_SECONDS
            while time.monotonic() < deadline:
                state = (task.status, task.progress, task.cancel_requested)
                if state != seen:
                    seen = state
                    yield ServerSentEventMessage(
                        event="task", data=msgspec.json.encode(TaskRead.of(task)).decode()
                    )
                if task.status in FINISHED:
                    return
                await asyncio.sleep(EVENTS_POLL_SECONDS)
                task = await get_task(actor, task_id)

        return ServerSentEvent(changes())

    @get(
        "/{task_id:uuid}/logs",
        operation_id="listTaskLogs",
        summary="The operation log of every attempt",
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 404),
    )
    async def task_logs(
        self,
        task_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        task_logs: NamedDependency[TaskLogs],
    ) -> list[TaskLogRead]:
        return TaskLogRead.each(await task_logs(actor, task_id))

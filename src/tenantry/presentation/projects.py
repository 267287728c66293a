"""Projects of the caller's tenant."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Controller, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter

from tenantry.application.projects import (
    CreateProject,
    DeleteProject,
    GetProject,
    ListProjects,
    UpdateProject,
)
from tenantry.domain.auth import Actor
from tenantry.domain.projects import DESCRIPTION_MAX_LENGTH, NAME_MAX_LENGTH, Project
from tenantry.domain.repository import ListQuery
from tenantry.presentation.bodies import NO_NUL, NOT_BLANK, StrictJSONBody
from tenantry.presentation.concurrency import VERSION_MAX, etag, expected_version
from tenantry.presentation.errors import BODY_ERRORS, PARAMETER_ERRORS, problems
from tenantry.presentation.pagination import (
    CreatedAfter,
    CreatedBefore,
    Limit,
    Offset,
    OrderField,
    Page,
    Search,
    instant,
)
from tenantry.presentation.security import SIGNED_IN_ERRORS

IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        max_length=64,
        # A header is a string when sent (Litestar would say "or null"); the pattern is
        # documented, not enforced here: a malformed one is a 400 from expected_version.
        schema_extra={
            "oneOf": None,
            "type": "string",
            "pattern": r'^[ \t]*(\*|(W/)?"[0-9]{1,10}")[ \t]*$',
        },
    ),
]


Name = Annotated[str, msgspec.Meta(max_length=NAME_MAX_LENGTH, pattern=NOT_BLANK)]
Description = Annotated[str, msgspec.Meta(max_length=DESCRIPTION_MAX_LENGTH, pattern=NO_NUL)]


class ProjectCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    description: Description = ""


class ProjectUpdate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name | None = None
    description: Description | None = None
    version: Annotated[int, msgspec.Meta(ge=1, le=VERSION_MAX)] | None = None


class ProjectRead(msgspec.Struct):
    id: UUID
    name: str
    description: str
    owner_id: UUID | None
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, project: Project) -> ProjectRead:
        return cls(
            id=project.id,
            name=project.name,
            description=project.description,
            owner_id=project.owner_id,
            version=project.version,
            created_at=project.created_at,
            updated_at=project.updated_at,
        )


def with_etag(project: Project, status_code: int = 200) -> Response[ProjectRead]:
    return Response(
        ProjectRead.of(project), status_code=status_code, headers={"ETag": etag(project.version)}
    )


class ProjectController(Controller):
    path = "/api/v1/projects"
    tags = ["projects"]

    @get(
        summary="Projects of your tenant", responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS)
    )
    async def list_projects(
        self,
        actor: NamedDependency[Actor],
        list_projects: NamedDependency[ListProjects],
        limit: Limit = 20,
        offset: Offset = 0,
        q: Search = None,
        order_by: OrderField = "-created_at",
        created_after: CreatedAfter = None,
        created_before: CreatedBefore = None,
    ) -> Page[ProjectRead]:
        query = ListQuery(
            limit=limit,
            offset=offset,
            q=q,
            order_by=order_by,
            created_after=instant(created_after, "created_after"),
            created_before=instant(created_before, "created_before"),
        )
        projects, total = await list_projects(actor, query)
        return Page(
            items=[ProjectRead.of(p) for p in projects], total=total, limit=limit, offset=offset
        )

    @post(summary="Create a project", responses=problems(*SIGNED_IN_ERRORS, *BODY_ERRORS))
    async def create_project(
        self,
        data: StrictJSONBody[ProjectCreate],
        actor: NamedDependency[Actor],
        create_project: NamedDependency[CreateProject],
    ) -> Response[ProjectRead]:
        project = await create_project(actor, name=data.name, description=data.description)
        return with_etag(project, status_code=201)

    @get(
        "/{project_id:uuid}",
        summary="A project; its ETag is its version",
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 404),
    )
    async def get_project(
        self,
        project_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        get_project: NamedDependency[GetProject],
    ) -> Response[ProjectRead]:
        return with_etag(await get_project(actor, project_id))

    @patch(
        "/{project_id:uuid}",
        summary="Change a project",
        description="Send If-Match with the ETag (or `version`) you read: a stale write is 412.",
        responses=problems(*SIGNED_IN_ERRORS, *BODY_ERRORS, 404, 412),
    )
    async def update_project(
        self,
        project_id: FromPath[UUID],
        data: StrictJSONBody[ProjectUpdate],
        actor: NamedDependency[Actor],
        update_project: NamedDependency[UpdateProject],
        if_match: IfMatch = None,
    ) -> Response[ProjectRead]:
        project = await update_project(
            actor,
            project_id,
            expected_version=expected_version(if_match, data.version),
            name=data.name,
            description=data.description,
        )
        return with_etag(project)

    @delete(
        "/{project_id:uuid}",
        summary="Delete a project and its documents (its owner, the tenant's admins and owners)",
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 403, 404),
    )
    async def delete_project(
        self,
        project_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        delete_project: NamedDependency[DeleteProject],
    ) -> None:
        await delete_project(actor, project_id)

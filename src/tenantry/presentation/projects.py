"""Projects of the caller's tenant."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar
from uuid import UUID

import msgspec
from litestar import Controller, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from tenantry.application.projects import (
    CreateProject,
    DeleteProject,
    GetProject,
    ListProjects,
    UpdateProject,
)
from tenantry.domain.auth import Actor
from tenantry.domain.projects import DESCRIPTION_MAX_LENGTH, NAME_MAX_LENGTH
from tenantry.presentation.bodies import NO_NUL, NOT_BLANK, StrictJSONBody
from tenantry.presentation.concurrency import IfMatch, Version, expected_version, with_etag
from tenantry.presentation.errors import BODY_ERRORS, PARAMETER_ERRORS, problems
from tenantry.presentation.pagination import (
    CreatedAfter,
    CreatedBefore,
    Limit,
    Offset,
    OrderField,
    Page,
    Search,
    list_query,
    page,
)
from tenantry.presentation.reads import Read
from tenantry.presentation.responses import NEW_RESOURCE, created
from tenantry.presentation.security import SIGNED_IN_ERRORS

Name = Annotated[str, msgspec.Meta(max_length=NAME_MAX_LENGTH, pattern=NOT_BLANK)]
Description = Annotated[str, msgspec.Meta(max_length=DESCRIPTION_MAX_LENGTH, pattern=NO_NUL)]


class ProjectCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new project of the tenant."""

    example: ClassVar[dict[str, Any]] = {"name": "Website relaunch"}

    name: Name
    description: Description = ""


class ProjectUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """The changes to a project, and the version they are based on (or If-Match)."""

    example: ClassVar[dict[str, Any]] = {"name": "Website relaunch"}

    name: Name | None = None
    description: Description | None = None
    version: Version | None = None


class ProjectRead(Read):
    """A project of the tenant; its version is also its ETag."""

    example: ClassVar[dict[str, Any]] = {"name": "Website relaunch"}

    id: UUID
    name: str
    description: str
    owner_id: UUID | None
    version: int
    created_at: datetime
    updated_at: datetime


class ProjectPage(Page[ProjectRead]):
    """A page of projects."""

    items: list[ProjectRead]


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
    ) -> ProjectPage:
        query = list_query(limit, offset, q, order_by, created_after, created_before)
        return page(ProjectPage, await list_projects(actor, query), limit, offset)

    @post(
        summary="Create a project",
        response_headers=NEW_RESOURCE,
        responses=problems(*SIGNED_IN_ERRORS, *BODY_ERRORS),
    )
    async def create_project(
        self,
        data: StrictJSONBody[ProjectCreate],
        actor: NamedDependency[Actor],
        create_project: NamedDependency[CreateProject],
    ) -> Response[ProjectRead]:
        project = await create_project(actor, name=data.name, description=data.description)
        return created(
            ProjectRead.of(project), f"{self.path}/{project.id}", version=project.version
        )

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
        return with_etag(ProjectRead, await get_project(actor, project_id))

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
        return with_etag(ProjectRead, project)

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

"""Project use cases: members create, read and edit; the project's owner (its creator), the
tenant's admins and owners delete. Another tenant's project is "not found"."""

from __future__ import annotations

from uuid import UUID

from tenantry.application.audit import changed, record
from tenantry.application.ownership import creator, require_may_destroy
from tenantry.domain.auth import Actor
from tenantry.domain.documents import DocumentRepository
from tenantry.domain.errors import NotFound, found
from tenantry.domain.ports import Clock, UnitOfWork
from tenantry.domain.projects import (
    Project,
    ProjectRepository,
    clean_description,
    clean_name,
)
from tenantry.domain.repository import ListQuery, given

# What the audit trail shows of a project's change: its name; the description only as changed.
SHOWN = ("name",)
HIDDEN = ("description",)


class CreateProject:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, actor: Actor, *, name: str, description: str = "") -> Project:
        name, description = clean_name(name), clean_description(description)
        async with self.uow:
            project = await self.uow.repository(ProjectRepository, actor.tenant_id).add_at_commit(
                owner_id=creator(actor), name=name, description=description
            )
            await record(
                self.uow,
                actor,
                "project.created",
                ("project", project.id),
                changes={"after": {"name": project.name}},
            )
            await self.uow.commit()
        return project


class GetProject:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, actor: Actor, project_id: UUID) -> Project:
        async with self.uow:
            project = await self.uow.repository(ProjectRepository, actor.tenant_id).get(project_id)
        if project is None:
            raise NotFound("No such project.")
        return project


class ListProjects:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, actor: Actor, query: ListQuery) -> tuple[list[Project], int]:
        async with self.uow:
            return await self.uow.repository(ProjectRepository, actor.tenant_id).list(query)


class UpdateProject:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(
        self,
        actor: Actor,
        project_id: UUID,
        *,
        expected_version: int | None,
        name: str | None = None,
        description: str | None = None,
    ) -> Project:
        name = None if name is None else clean_name(name)
        description = None if description is None else clean_description(description)
        async with self.uow:
            projects = self.uow.repository(ProjectRepository, actor.tenant_id)
            before, project = found(
                await projects.update_with_before(
                    project_id,
                    given(name=name, description=description),
                    expected_version=expected_version,
                ),
                "No such project.",
            )
            await record(
                self.uow,
                actor,
                "project.updated",
                ("project", project.id),
                changes=changed(before, project, shown=SHOWN, hidden=HIDDEN),
            )
            await self.uow.commit()
        return project


class DeleteProject:
    def __init__(self, uow: UnitOfWork, clock: Clock) -> None:
        self.uow = uow
        self.clock = clock

    async def __call__(self, actor: Actor, project_id: UUID) -> None:
        async with self.uow:
            projects = self.uow.repository(ProjectRepository, actor.tenant_id)
            now = self.clock.now()
            # A delete that ran meanwhile went first: its row lock held this one until it
            # committed, and the row is gone for this one as for a later request. One the actor
            # may not make is undone with the transaction.
            project = found(await projects.soft_delete(project_id, now), "No such project.")
            require_may_destroy(actor, project.owner_id, "this project")
            # Its documents go with it, by the same commit.
            documents = self.uow.repository(DocumentRepository, actor.tenant_id)
            await documents.soft_delete_all_at_commit(now, project_id=project_id)
            await record(
                self.uow,
                actor,
                "project.deleted",
                ("project", project_id),
                changes={"before": {"name": project.name}},
            )
            await self.uow.commit()

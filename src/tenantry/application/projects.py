"""Project use cases: members create, read and edit; the project's owner (its creator), the
tenant's admins and owners delete. Another tenant's project is "not found"."""

from __future__ import annotations

from uuid import UUID

from tenantry.application.ownership import creator, require_may_destroy
from tenantry.domain.auth import Actor
from tenantry.domain.errors import NotFound
from tenantry.domain.ports import Clock, UnitOfWork
from tenantry.domain.projects import ListQuery, Project, clean_description, clean_name


class CreateProject:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, actor: Actor, *, name: str, description: str = "") -> Project:
        name, description = clean_name(name), clean_description(description)
        async with self.uow:
            project = await self.uow.projects(actor.tenant_id).add(
                owner_id=creator(actor), name=name, description=description
            )
            await self.uow.commit()
        return project


class GetProject:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, actor: Actor, project_id: UUID) -> Project:
        async with self.uow:
            project = await self.uow.projects(actor.tenant_id).get(project_id)
        if project is None:
            raise NotFound("No such project.")
        return project


class ListProjects:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, actor: Actor, query: ListQuery) -> tuple[list[Project], int]:
        async with self.uow:
            return await self.uow.projects(actor.tenant_id).list(query)


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
            project = await self.uow.projects(actor.tenant_id).update(
                project_id, expected_version=expected_version, name=name, description=description
            )
            if project is None:
                raise NotFound("No such project.")
            await self.uow.commit()
        return project


class DeleteProject:
    def __init__(self, uow: UnitOfWork, clock: Clock) -> None:
        self.uow = uow
        self.clock = clock

    async def __call__(self, actor: Actor, project_id: UUID) -> None:
        async with self.uow:
            projects = self.uow.projects(actor.tenant_id)
            project = await projects.get(project_id)
            if project is None:
                raise NotFound("No such project.")
            require_may_destroy(actor, project.owner_id, "this project")
            await projects.soft_delete(project_id, self.clock.now())
            await self.uow.commit()

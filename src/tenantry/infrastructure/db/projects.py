"""Project persistence: soft-deleted rows stay, invisible; writes bump the version."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import cached_property
from typing import Any
from uuid import UUID

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.domain.errors import StaleVersion
from tenantry.domain.projects import ListQuery, Project
from tenantry.infrastructure.db.listing import changes, list_filters
from tenantry.infrastructure.db.models import DocumentModel, ProjectModel
from tenantry.infrastructure.db.tenancy import DriverStatement, TenantScopedRepository, of_tenant


class ProjectModelRepository(TenantScopedRepository[ProjectModel]):
    model_type = ProjectModel

    live_only = True


_projects = ProjectModel.__table__
# Get-by-id is the hottest read: compiled once, run on the driver. Same filter as scoped().
_GET = DriverStatement(
    select(_projects).where(
        of_tenant(_projects),
        _projects.c.id == bindparam("project_id"),
        _projects.c.deleted_at.is_(None),
    )
)


def to_project(row: ProjectModel) -> Project:
    return Project(
        id=row.id,
        tenant_id=row.tenant_id,
        owner_id=row.owner_id,
        name=row.name,
        description=row.description,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def record_to_project(record: Mapping[str, Any]) -> Project:
    return Project(
        id=record["id"],
        tenant_id=record["tenant_id"],
        owner_id=record["owner_id"],
        name=record["name"],
        description=record["description"],
        version=record["version"],
        created_at=record["created_at"],
        updated_at=record["updated_at"],
    )


class SqlProjectRepository:
    def __init__(self, session: AsyncSession, tenant_id: UUID) -> None:
        self.session = session
        self.tenant_id = tenant_id

    @cached_property
    def repository(self) -> ProjectModelRepository:
        # Built on first use: the hot read runs on the driver and needs none.
        return ProjectModelRepository(session=self.session, tenant_id=self.tenant_id)

    async def add(self, *, owner_id: UUID | None, name: str, description: str) -> Project:
        row = await self.repository.add(
            ProjectModel(owner_id=owner_id, name=name, description=description, version=1)
        )
        return to_project(row)

    async def get(self, project_id: UUID) -> Project | None:
        record = await _GET.fetch_row(self.session, tenant_id=self.tenant_id, project_id=project_id)
        return None if record is None else record_to_project(record)

    async def list(self, query: ListQuery) -> tuple[list[Project], int]:
        rows, total = await self.repository.get_many_and_count(
            *list_filters(query, search_field="name")
        )
        return [to_project(row) for row in rows], total

    async def update(
        self,
        project_id: UUID,
        *,
        expected_version: int | None,
        name: str | None = None,
        description: str | None = None,
    ) -> Project | None:
        values = changes(name=name, description=description)
        return await self._write(project_id, expected_version, values)

    async def _write(
        self, project_id: UUID, expected_version: int | None, values: dict[str, Any]
    ) -> Project | None:
        # One conditional UPDATE: of two writers holding the same version, exactly one wins.
        statement = (
            self.repository.update_rows()
            .where(ProjectModel.id == project_id)
            .values(**values, version=ProjectModel.version + 1, updated_at=func.now())
            .returning(ProjectModel)
            .execution_options(synchronize_session=False, populate_existing=True)
        )
        if expected_version is not None:
            statement = statement.where(ProjectModel.version == expected_version)
        row = (await self.session.execute(statement)).scalar_one_or_none()
        if row is not None:
            return to_project(row)
        if expected_version is not None and await self.get(project_id) is not None:
            raise StaleVersion("The project changed since you read it; fetch it and retry.")
        return None

    async def soft_delete(self, project_id: UUID, at: datetime) -> bool:
        session = self.session
        deleted = await session.execute(
            self.repository.update_rows()
            .where(ProjectModel.id == project_id)
            .values(deleted_at=at)
            .returning(ProjectModel.id)
        )
        if deleted.first() is None:
            return False
        await session.execute(
            update(DocumentModel)
            .where(
                of_tenant(DocumentModel, self.tenant_id),
                DocumentModel.project_id == project_id,
                DocumentModel.deleted_at.is_(None),
            )
            .values(deleted_at=at)
        )
        return True

"""Project persistence: soft-deleted rows stay, invisible; writes bump the version."""

from __future__ import annotations

from tenantry.domain.projects import Project, ProjectRepository
from tenantry.infrastructure.db.models import ProjectModel
from tenantry.infrastructure.db.repository import SqlRepository


class SqlProjectRepository(SqlRepository[Project]):
    model = ProjectModel
    entity = Project
    port = ProjectRepository

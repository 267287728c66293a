"""Project persistence: soft-deleted rows stay, invisible; writes bump the version."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import ForeignKeyConstraint, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.domain.projects import Project, ProjectRepository
from tenantry.infrastructure.db.base import TenantOwned
from tenantry.infrastructure.db.repository import SqlRepository


class ProjectModel(TenantOwned):
    __tablename__ = "projects"
    __table_args__ = (
        # Deleting the owner clears owner_id first (MADE_BY in users.py).
        ForeignKeyConstraint(["tenant_id", "owner_id"], ["users.tenant_id", "users.id"]),
        Index("ix_projects_tenant_created", "tenant_id", "created_at"),
        Index("ix_projects_tenant_updated", "tenant_id", "updated_at"),
        Index("ix_projects_tenant_name", "tenant_id", "name"),
    )

    owner_id: Mapped[UUID | None]
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class SqlProjectRepository(SqlRepository[Project]):
    model = ProjectModel
    entity = Project
    port = ProjectRepository

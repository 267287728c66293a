"""Document persistence: scoped to a tenant and, by ``project_id``, to a project."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import ForeignKeyConstraint, Index, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.domain.documents import Document, DocumentRepository
from tenantry.infrastructure.db.base import TenantOwned, creator_key
from tenantry.infrastructure.db.repository import SqlRepository


class DocumentModel(TenantOwned):
    __tablename__ = "documents"
    __table_args__ = (
        # A document can only belong to a project of its own tenant.
        ForeignKeyConstraint(
            ["tenant_id", "project_id"], ["projects.tenant_id", "projects.id"], ondelete="CASCADE"
        ),
        creator_key(),
        Index("ix_documents_tenant_project_created", "tenant_id", "project_id", "created_at"),
    )

    project_id: Mapped[UUID]
    created_by: Mapped[UUID | None]
    title: Mapped[str] = mapped_column(String(300))
    content: Mapped[str] = mapped_column(Text, default="", server_default="")
    # "metadata" is taken by SQLAlchemy's declarative base; the column keeps the API's name.
    meta: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, default=dict, server_default=text("'{}'::jsonb")
    )
    version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class SqlDocumentRepository(SqlRepository[Document]):
    model = DocumentModel
    entity = Document
    port = DocumentRepository

"""Document persistence: scoped to a tenant and, by ``project_id``, to a project."""

from __future__ import annotations

from datetime import datetime
from string import Formatter
from typing import Any
from uuid import UUID

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import ForeignKeyConstraint, Index, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.domain.documents import Document, DocumentRepository
from tenantry.domain.errors import NotFound
from tenantry.infrastructure.db.base import TenantOwned, creator_key
from tenantry.infrastructure.db.repository import SqlRepository
from tenantry.infrastructure.db.tenancy import run_at_commit

# A document and the check of its project, by the commit (migration 0027_add_document): the
# function raises PROJECT_NOT_LIVE when the project is not a live one of the tenant.
_ADD_DOCUMENT = (
    "SELECT tenantry_add_document({tenant_id}, {id}, {project_id}, {created_by}, {title}, "
    "{content}, {metadata}::jsonb, {version}, {created_at}, {updated_at})"
)
PROJECT_NOT_LIVE = "TR003"
_WRITTEN = frozenset(name for _, name, _, _ in Formatter().parse(_ADD_DOCUMENT) if name)


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

    def _insert_at_commit(self, row: dict[str, Any]) -> None:
        if unwritten := set(row) - _WRITTEN:
            # The function writes a new, live document: nothing else may be said of it.
            raise TypeError(f"a new document cannot be given {sorted(unwritten)}")
        run_at_commit(
            self.session,
            self.tenant_id,
            _ADD_DOCUMENT,
            refused={PROJECT_NOT_LIVE: _no_project},
            # A column left out is NULL, as add_at_commit's answer says.
            **dict.fromkeys(_WRITTEN) | row,
        )


def _no_project() -> NotFound:
    return NotFound("No such project.")

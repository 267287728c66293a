"""Document persistence: scoped to a tenant and a live project, soft-deleted, versioned."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import func

from tenantry.domain.documents import Document
from tenantry.domain.errors import StaleVersion
from tenantry.domain.projects import ListQuery
from tenantry.infrastructure.db.listing import changes, list_filters
from tenantry.infrastructure.db.models import DocumentModel
from tenantry.infrastructure.db.tenancy import TenantScopedRepository


class DocumentModelRepository(TenantScopedRepository[DocumentModel]):
    model_type = DocumentModel

    live_only = True


def to_document(row: DocumentModel) -> Document:
    return Document(
        id=row.id,
        tenant_id=row.tenant_id,
        project_id=row.project_id,
        created_by=row.created_by,
        title=row.title,
        content=row.content,
        metadata=dict(row.meta),
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class SqlDocumentRepository:
    def __init__(self, repository: DocumentModelRepository) -> None:
        self.repository = repository

    async def add(
        self,
        *,
        project_id: UUID,
        created_by: UUID | None,
        title: str,
        content: str,
        metadata: dict[str, Any],
    ) -> Document:
        row = await self.repository.add(
            DocumentModel(
                project_id=project_id,
                created_by=created_by,
                title=title,
                content=content,
                meta=metadata,
                version=1,
            )
        )
        return to_document(row)

    async def get(self, project_id: UUID, document_id: UUID) -> Document | None:
        row = await self.repository.get_one_or_none(id=document_id, project_id=project_id)
        return None if row is None else to_document(row)

    async def list(self, project_id: UUID, query: ListQuery) -> tuple[list[Document], int]:
        rows, total = await self.repository.get_many_and_count(
            *list_filters(query, search_field="title"), project_id=project_id
        )
        return [to_document(row) for row in rows], total

    async def update(
        self,
        project_id: UUID,
        document_id: UUID,
        *,
        expected_version: int | None,
        title: str | None = None,
        content: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Document | None:
        values = changes(title=title, content=content, meta=metadata)
        statement = (
            self.repository.update_rows()
            .where(*self._key(project_id, document_id))
            .values(**values, version=DocumentModel.version + 1, updated_at=func.now())
            .returning(DocumentModel)
            .execution_options(synchronize_session=False, populate_existing=True)
        )
        if expected_version is not None:
            statement = statement.where(DocumentModel.version == expected_version)
        row = (await self.repository.session.execute(statement)).scalar_one_or_none()
        if row is not None:
            return to_document(row)
        if expected_version is not None and await self.get(project_id, document_id) is not None:
            raise StaleVersion("The document changed since you read it; fetch it and retry.")
        return None

    async def soft_delete(self, project_id: UUID, document_id: UUID, at: datetime) -> bool:
        result = await self.repository.session.execute(
            self.repository.update_rows()
            .where(*self._key(project_id, document_id))
            .values(deleted_at=at)
            .returning(DocumentModel.id)
        )
        return result.first() is not None

    def _key(self, project_id: UUID, document_id: UUID) -> tuple[Any, ...]:
        return DocumentModel.project_id == project_id, DocumentModel.id == document_id

"""Document persistence: scoped to a tenant and, by ``project_id``, to a project."""

from __future__ import annotations

from tenantry.domain.documents import Document, DocumentRepository
from tenantry.infrastructure.db.models import DocumentModel
from tenantry.infrastructure.db.repository import SqlRepository


class SqlDocumentRepository(SqlRepository[Document]):
    model = DocumentModel
    entity = Document
    port = DocumentRepository

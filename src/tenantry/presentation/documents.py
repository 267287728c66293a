"""Documents inside a project of the caller's tenant."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from tenantry.application.documents import (
    CreateDocument,
    DeleteDocument,
    GetDocument,
    ListDocuments,
    UpdateDocument,
)
from tenantry.domain.auth import Actor
from tenantry.domain.documents import CONTENT_MAX_LENGTH, TITLE_MAX_LENGTH, Document
from tenantry.domain.projects import ListQuery
from tenantry.presentation.concurrency import etag, expected_version
from tenantry.presentation.pagination import (
    CreatedAfter,
    CreatedBefore,
    Limit,
    Offset,
    Page,
    Search,
)
from tenantry.presentation.projects import IfMatch

Title = Annotated[str, msgspec.Meta(max_length=TITLE_MAX_LENGTH)]
Content = Annotated[str, msgspec.Meta(max_length=CONTENT_MAX_LENGTH)]
DocumentOrder = Annotated[str, msgspec.Meta(pattern=r"^-?(created_at|updated_at|title)$")]


class DocumentCreate(msgspec.Struct, forbid_unknown_fields=True):
    title: Title
    content: Content
    metadata: dict[str, Any] | None = None


class DocumentUpdate(msgspec.Struct, forbid_unknown_fields=True):
    title: Title | None = None
    content: Content | None = None
    metadata: dict[str, Any] | None = None
    version: Annotated[int, msgspec.Meta(ge=1)] | None = None


class DocumentRead(msgspec.Struct):
    id: UUID
    project_id: UUID
    title: str
    content: str
    metadata: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, document: Document) -> DocumentRead:
        return cls(
            id=document.id,
            project_id=document.project_id,
            title=document.title,
            content=document.content,
            metadata=document.metadata,
            version=document.version,
            created_at=document.created_at,
            updated_at=document.updated_at,
        )


def with_etag(document: Document, status_code: int = 200) -> Response[DocumentRead]:
    return Response(
        DocumentRead.of(document),
        status_code=status_code,
        headers={"ETag": etag(document.version)},
    )


class DocumentController(Controller):
    path = "/api/v1/projects/{project_id:uuid}/documents"
    tags = ["documents"]

    @get(summary="Documents of a project")
    async def list_documents(
        self,
        project_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        list_documents: NamedDependency[ListDocuments],
        limit: Limit = 20,
        offset: Offset = 0,
        q: Search = None,
        order_by: DocumentOrder = "-created_at",
        created_after: CreatedAfter = None,
        created_before: CreatedBefore = None,
    ) -> Page[DocumentRead]:
        query = ListQuery(
            limit=limit,
            offset=offset,
            q=q,
            order_by=order_by,
            created_after=created_after,
            created_before=created_before,
        )
        documents, total = await list_documents(actor, project_id, query)
        return Page(
            items=[DocumentRead.of(d) for d in documents], total=total, limit=limit, offset=offset
        )

    @post(summary="Add a document to a project")
    async def create_document(
        self,
        project_id: FromPath[UUID],
        data: JSONBody[DocumentCreate],
        actor: NamedDependency[Actor],
        create_document: NamedDependency[CreateDocument],
    ) -> Response[DocumentRead]:
        document = await create_document(
            actor, project_id, title=data.title, content=data.content, metadata=data.metadata
        )
        return with_etag(document, status_code=201)

    @get("/{document_id:uuid}", summary="A document; its ETag is its version")
    async def get_document(
        self,
        project_id: FromPath[UUID],
        document_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        get_document: NamedDependency[GetDocument],
    ) -> Response[DocumentRead]:
        return with_etag(await get_document(actor, project_id, document_id))

    @patch("/{document_id:uuid}", summary="Change a document (If-Match or version: 412 if stale)")
    async def update_document(
        self,
        project_id: FromPath[UUID],
        document_id: FromPath[UUID],
        data: JSONBody[DocumentUpdate],
        actor: NamedDependency[Actor],
        update_document: NamedDependency[UpdateDocument],
        if_match: IfMatch = None,
    ) -> Response[DocumentRead]:
        document = await update_document(
            actor,
            project_id,
            document_id,
            expected_version=expected_version(if_match, data.version),
            title=data.title,
            content=data.content,
            metadata=data.metadata,
        )
        return with_etag(document)

    @delete("/{document_id:uuid}", summary="Delete a document")
    async def delete_document(
        self,
        project_id: FromPath[UUID],
        document_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        delete_document: NamedDependency[DeleteDocument],
    ) -> None:
        await delete_document(actor, project_id, document_id)

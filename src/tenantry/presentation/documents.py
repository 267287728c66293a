"""Documents inside a project of the caller's tenant."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar import Controller, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from tenantry.application.documents import (
    CreateDocument,
    DeleteDocument,
    GetDocument,
    ListDocuments,
    UpdateDocument,
)
from tenantry.domain.auth import Actor
from tenantry.domain.documents import CONTENT_MAX_LENGTH, TITLE_MAX_LENGTH
from tenantry.presentation.bodies import NO_NUL, NOT_BLANK, StrictJSONBody
from tenantry.presentation.concurrency import IfMatch, Version, expected_version, with_etag
from tenantry.presentation.errors import BODY_ERRORS, PARAMETER_ERRORS, problems
from tenantry.presentation.pagination import (
    CreatedAfter,
    CreatedBefore,
    Limit,
    Offset,
    Page,
    Search,
    list_query,
    page,
)
from tenantry.presentation.reads import Read
from tenantry.presentation.responses import NEW_RESOURCE, created
from tenantry.presentation.security import SIGNED_IN_ERRORS

Title = Annotated[str, msgspec.Meta(max_length=TITLE_MAX_LENGTH, pattern=NOT_BLANK)]
Content = Annotated[str, msgspec.Meta(max_length=CONTENT_MAX_LENGTH, pattern=NO_NUL)]
# A Literal, not a pattern: Litestar does not apply msgspec constraints to query parameters.
DocumentOrder = Annotated[
    Literal["created_at", "-created_at", "title", "-title", "updated_at", "-updated_at"],
    QueryParameter(description="Sort field; a leading '-' sorts descending."),
]


class DocumentCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new document of the project."""

    title: Title
    content: Content
    metadata: dict[str, Any] | None = None


class DocumentUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """The changes to a document, and the version they are based on (or If-Match)."""

    title: Title | None = None
    content: Content | None = None
    metadata: dict[str, Any] | None = None
    version: Version | None = None


class DocumentRead(Read):
    """A document of a project; its version is also its ETag."""

    id: UUID
    project_id: UUID
    created_by: UUID | None
    title: str
    content: str
    metadata: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime


class DocumentPage(Page[DocumentRead]):
    """A page of documents."""

    items: list[DocumentRead]


class DocumentController(Controller):
    path = "/api/v1/projects/{project_id:uuid}/documents"
    tags = ["documents"]

    @get(
        summary="Documents of a project",
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 404),
    )
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
    ) -> DocumentPage:
        query = list_query(limit, offset, q, order_by, created_after, created_before)
        return page(DocumentPage, await list_documents(actor, project_id, query), limit, offset)

    @post(
        response_headers=NEW_RESOURCE,
        summary="Add a document to a project",
        responses=problems(*SIGNED_IN_ERRORS, *BODY_ERRORS, 404),
    )
    async def create_document(
        self,
        project_id: FromPath[UUID],
        data: StrictJSONBody[DocumentCreate],
        actor: NamedDependency[Actor],
        create_document: NamedDependency[CreateDocument],
    ) -> Response[DocumentRead]:
        document = await create_document(
            actor, project_id, title=data.title, content=data.content, metadata=data.metadata
        )
        location = f"/api/v1/projects/{project_id}/documents/{document.id}"
        return created(DocumentRead.of(document), location, version=document.version)

    @get(
        "/{document_id:uuid}",
        summary="A document; its ETag is its version",
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 404),
    )
    async def get_document(
        self,
        project_id: FromPath[UUID],
        document_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        get_document: NamedDependency[GetDocument],
    ) -> Response[DocumentRead]:
        return with_etag(DocumentRead, await get_document(actor, project_id, document_id))

    @patch(
        "/{document_id:uuid}",
        summary="Change a document (If-Match or version: 412 if stale)",
        responses=problems(*SIGNED_IN_ERRORS, *BODY_ERRORS, 404, 412),
    )
    async def update_document(
        self,
        project_id: FromPath[UUID],
        document_id: FromPath[UUID],
        data: StrictJSONBody[DocumentUpdate],
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
        return with_etag(DocumentRead, document)

    @delete(
        "/{document_id:uuid}",
        summary="Delete a document (its author, admins and owners)",
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 403, 404),
    )
    async def delete_document(
        self,
        project_id: FromPath[UUID],
        document_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        delete_document: NamedDependency[DeleteDocument],
    ) -> None:
        await delete_document(actor, project_id, document_id)

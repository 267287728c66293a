"""Document use cases, always inside a live project of the caller's tenant. Members create,
read and edit; the document's author, the tenant's admins and owners delete."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from tenantry.application.audit import changed, record
from tenantry.application.ownership import creator, require_may_destroy
from tenantry.domain.auth import Actor
from tenantry.domain.documents import (
    Document,
    DocumentRepository,
    check_content,
    check_metadata,
    clean_title,
)
from tenantry.domain.errors import NotFound, found
from tenantry.domain.ports import Clock, UnitOfWork
from tenantry.domain.projects import ProjectRepository
from tenantry.domain.repository import ListQuery, given

# What the audit trail shows of a document's change: its title; its content and metadata, the
# tenant's data, only as changed.
SHOWN = ("title",)
HIDDEN = ("content", "metadata")


async def require_project(uow: UnitOfWork, actor: Actor, project_id: UUID) -> None:
    if await uow.repository(ProjectRepository, actor.tenant_id).get(project_id) is None:
        raise NotFound("No such project.")


class CreateDocument:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(
        self,
        actor: Actor,
        project_id: UUID,
        *,
        title: str,
        content: str,
        metadata: dict[str, Any] | None = None,
    ) -> Document:
        title, content = clean_title(title), check_content(content)
        metadata = check_metadata(metadata or {})
        async with self.uow:
            # Its project is checked by the commit, which holds it live until the document is
            # written (DocumentRepository): nothing is read before, one round trip in all.
            document = await self.uow.repository(DocumentRepository, actor.tenant_id).add_at_commit(
                project_id=project_id,
                created_by=creator(actor),
                title=title,
                content=content,
                metadata=metadata,
            )
            await record(
                self.uow,
                actor,
                "document.created",
                ("document", document.id),
                changes={"after": {"title": document.title}},
            )
            await self.uow.commit()
        return document


class GetDocument:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, actor: Actor, project_id: UUID, document_id: UUID) -> Document:
        async with self.uow:
            document = await self.uow.repository(DocumentRepository, actor.tenant_id).get(
                document_id, project_id=project_id
            )
        if document is None:
            raise NotFound("No such document.")
        return document


class ListDocuments:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(
        self, actor: Actor, project_id: UUID, query: ListQuery
    ) -> tuple[list[Document], int]:
        async with self.uow:
            await require_project(self.uow, actor, project_id)
            return await self.uow.repository(DocumentRepository, actor.tenant_id).list(
                query, project_id=project_id
            )


class UpdateDocument:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(
        self,
        actor: Actor,
        project_id: UUID,
        document_id: UUID,
        *,
        expected_version: int | None,
        title: str | None = None,
        content: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Document:
        title = None if title is None else clean_title(title)
        content = None if content is None else check_content(content)
        metadata = None if metadata is None else check_metadata(metadata)
        async with self.uow:
            documents = self.uow.repository(DocumentRepository, actor.tenant_id)
            before, document = found(
                await documents.update_with_before(
                    document_id,
                    given(title=title, content=content, metadata=metadata),
                    expected_version=expected_version,
                    project_id=project_id,
                ),
                "No such document.",
            )
            await record(
                self.uow,
                actor,
                "document.updated",
                ("document", document.id),
                changes=changed(before, document, shown=SHOWN, hidden=HIDDEN),
            )
            await self.uow.commit()
        return document


class DeleteDocument:
    def __init__(self, uow: UnitOfWork, clock: Clock) -> None:
        self.uow = uow
        self.clock = clock

    async def __call__(self, actor: Actor, project_id: UUID, document_id: UUID) -> None:
        async with self.uow:
            documents = self.uow.repository(DocumentRepository, actor.tenant_id)
            # One deleted meanwhile is gone for this request too (see DeleteProject).
            document = found(
                await documents.soft_delete(document_id, self.clock.now(), project_id=project_id),
                "No such document.",
            )
            require_may_destroy(actor, document.created_by, "this document")
            await record(
                self.uow,
                actor,
                "document.deleted",
                ("document", document_id),
                changes={"before": {"title": document.title}},
            )
            await self.uow.commit()

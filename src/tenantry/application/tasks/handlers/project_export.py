"""Task ``project.export``."""

from __future__ import annotations

import asyncio
import builtins
import tempfile
import zipfile
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import msgspec

from tenantry.application.tasks import (
    TaskContext,
)
from tenantry.application.tasks.archives import export_policy, store_archive
from tenantry.domain.documents import Document, DocumentRepository
from tenantry.domain.errors import NotFound
from tenantry.domain.projects import ProjectRepository
from tenantry.domain.repository import ListQuery


class ExportConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The config of a project.export task: the project to export."""

    project_id: UUID


class ProjectExport:
    """Task ``project.export``: a zip of a project's documents (Markdown) and a manifest,
    stored as a new file of the tenant and listed in the task's output_files."""

    type: str = "project.export"
    config_type: builtins.type[msgspec.Struct] = ExportConfig
    page = 100

    async def run(self, context: TaskContext, config: ExportConfig) -> dict[str, Any]:
        async with context.units() as uow:
            project = await uow.repository(ProjectRepository, context.tenant_id).get(
                config.project_id
            )
        if project is None:
            raise NotFound("No such project.")
        # Spooled: small exports stay in memory, large ones go to a temporary file. One page of
        # documents at a time, compressed and written in a thread: memory holds a page, and the
        # loop (the API's too, under `tenantry dev`) serves requests and heartbeats meanwhile.
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as buffer:
            # Closing writes only the central directory: cheap enough for the loop.
            with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                project_json = msgspec.json.encode(project)
                await asyncio.to_thread(archive.writestr, "project.json", project_json)
                written = 0
                while True:
                    await context.check_cancelled()
                    query = ListQuery(limit=self.page, offset=written, order_by="created_at")
                    async with context.units() as uow:
                        documents = uow.repository(DocumentRepository, context.tenant_id)
                        batch, total = await documents.list(query, project_id=project.id)
                    await asyncio.to_thread(write_documents, archive, batch)
                    written += len(batch)
                    await context.progress(written * 75 // max(total, 1))
                    if not batch or written >= total:
                        break
            stored = await store_archive(
                context,
                buffer,
                filename=f"{project.name}.zip",
                policy=export_policy(context.file_policy),
            )
        await context.progress(100)
        return {"file_id": str(stored.id), "documents": written, "size": stored.size}


def write_documents(archive: zipfile.ZipFile, documents: Sequence[Document]) -> None:
    for document in documents:
        archive.writestr(
            f"documents/{document.id}.md", f"# {document.title}\n\n{document.content}\n"
        )

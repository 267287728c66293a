"""Task ``project.export``."""

from __future__ import annotations

import asyncio
import builtins
import tempfile
import zipfile
from collections.abc import AsyncIterator, Sequence
from typing import Any
from uuid import UUID

import msgspec

from tenantry.application.files import UploadFile
from tenantry.application.ownership import SYSTEM_USER as SYSTEM
from tenantry.application.tasks import (
    TaskContext,
)
from tenantry.domain.auth import Actor
from tenantry.domain.documents import Document, DocumentRepository
from tenantry.domain.errors import NotFound
from tenantry.domain.files import ZIP, FilePolicy
from tenantry.domain.projects import ProjectRepository
from tenantry.domain.repository import ListQuery


class ExportConfig(msgspec.Struct, forbid_unknown_fields=True):
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
            buffer.seek(0)

            async def chunks() -> AsyncIterator[bytes]:
                while chunk := await asyncio.to_thread(buffer.read, 256 * 1024):
                    yield chunk

            # The system writes this file on the task's behalf; only the tenant matters to it.
            actor = Actor(
                user_id=context.task.created_by or SYSTEM, tenant_id=context.tenant_id, roles=()
            )
            async with context.units() as uow:
                files = context.files(uow)
                upload = UploadFile(files, policy=export_policy(files.policy), system=True)
                stored = await upload(
                    actor,
                    filename=f"{project.name}.zip",
                    claimed_type="application/zip",
                    chunks=chunks(),
                )
        context.output_files.append(stored.id)
        await context.progress(100)
        return {"file_id": str(stored.id), "documents": written, "size": stored.size}


def write_documents(archive: zipfile.ZipFile, documents: Sequence[Document]) -> None:
    for document in documents:
        archive.writestr(
            f"documents/{document.id}.md", f"# {document.title}\n\n{document.content}\n"
        )


def export_policy(policy: FilePolicy) -> FilePolicy:
    return msgspec.structs.replace(policy, allowed_types=policy.allowed_types | {ZIP})

"""Task ``file.inspect``."""

from __future__ import annotations

import asyncio
import builtins
import hashlib
from typing import Any

import msgspec

from tenantry.application.tasks import (
    TaskContext,
)
from tenantry.domain.errors import Invalid, NotFound
from tenantry.domain.files import SNIFF_BYTES, FileRepository, image_size, sniff

HASH_IN_THREAD_BYTES = 1024 * 1024


class InspectConfig(msgspec.Struct, forbid_unknown_fields=True):
    """file.inspect takes its files from the task's input_files; no options yet."""


class FileInspect:
    """Task ``file.inspect``: read each input file back from storage and record its checksum,
    sniffed type and image size in the file's metadata."""

    type: str = "file.inspect"
    config_type: builtins.type[msgspec.Struct] = InspectConfig

    async def run(self, context: TaskContext, config: InspectConfig) -> dict[str, Any]:  # noqa: ARG002 - no options yet
        inputs = context.task.input_files
        if not inputs:
            raise Invalid(
                "file.inspect needs input_files.", fields={"input_files": "must not be empty"}
            )
        report: dict[str, Any] = {}
        for index, file_id in enumerate(inputs):
            await context.check_cancelled()
            async with context.units() as uow:
                found = await uow.repository(FileRepository, context.tenant_id).get(file_id)
            if found is None:
                raise NotFound(f"Input file {file_id} is gone.")
            digest, head, size = hashlib.sha256(), bytearray(), 0
            async for chunk in context.storage.get(found.storage_key):
                if len(chunk) >= HASH_IN_THREAD_BYTES:
                    await asyncio.to_thread(digest.update, chunk)
                else:
                    digest.update(chunk)
                head += chunk[: SNIFF_BYTES - len(head)]
                size += len(chunk)
                done = (index + size / max(found.size, 1)) / len(inputs)
                await context.progress(int(done * 99))
            kind = sniff(bytes(head))
            dimensions = image_size(kind, bytes(head))
            inspection = {
                "sha256": digest.hexdigest(),
                "size": size,
                "content_type": kind,
                "intact": digest.hexdigest() == found.sha256 and size == found.size,
            }
            if dimensions:
                inspection["width"], inspection["height"] = dimensions
            async with context.units() as uow:
                await uow.repository(FileRepository, context.tenant_id).update(
                    file_id, {"metadata": {**found.metadata, "inspection": inspection}}
                )
                await uow.commit()
            report[str(file_id)] = inspection
        await context.progress(100)
        return {"files": report}

"""What the export tasks share: the zip archive they write to a temporary file is stored as a
new file of the tenant, written by the system on the task's behalf and listed in the task's
``output_files``.

An archive counts against the tenant's storage quota like any file of it: it is the tenant's
data, and it stays until someone deletes it. Its type, a zip, is allowed whatever the tenant's
upload policy says, since the system made it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import IO

import msgspec

from tenantry.application.tasks import TaskContext
from tenantry.domain.files import ZIP, FilePolicy, StoredFile

# Read from the temporary file and handed to the store a chunk at a time, each read in a thread.
CHUNK = 256 * 1024


def export_policy(policy: FilePolicy, *, max_bytes: int | None = None) -> FilePolicy:
    """The tenant's file policy for an archive: zips allowed, and ``max_bytes`` for the file's
    size limit when given (the quota still applies)."""
    return msgspec.structs.replace(
        policy,
        allowed_types=policy.allowed_types | {ZIP},
        max_bytes=policy.max_bytes if max_bytes is None else max_bytes,
    )


async def store_archive(
    context: TaskContext, archive: IO[bytes], *, filename: str, policy: FilePolicy
) -> StoredFile:
    """Store the archive written to ``archive`` (a file) as a new file of the task's tenant,
    read back from its start in chunks, and list it in the task's ``output_files``."""
    archive.seek(0)

    async def chunks() -> AsyncIterator[bytes]:
        while chunk := await asyncio.to_thread(archive.read, CHUNK):
            yield chunk

    return await context.write_output(filename, chunks(), content_type=ZIP, policy=policy)

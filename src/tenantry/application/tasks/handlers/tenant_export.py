"""Task ``tenant.export``: every row of the tenant and every live file of it, as one zip.

Memory stays flat whatever the tenant holds: rows are read a page at a time (keyset by primary
key), file bytes are copied from storage a chunk at a time, the archive is written to a
temporary file, and stored from it a chunk at a time. The zip writes and the hashing run in a
thread, so the loop (the API's too, under ``tenantry dev``) serves requests and heartbeats
meanwhile. The layout is in ``domain/tenant_export.py`` and docs/governance.md.

Not a snapshot: each page is read in a transaction of its own, so a row changed while the export
runs may be in it as it was or as it became. The manifest's ``created_at`` is when it started.
"""

from __future__ import annotations

import builtins
import hashlib
import tempfile
import time
import zipfile
from asyncio import to_thread
from datetime import datetime
from typing import IO, Any
from uuid import UUID

import msgspec

from tenantry.application.tasks import TaskContext
from tenantry.application.tasks.archives import export_policy, store_archive
from tenantry.domain.errors import Forbidden, found
from tenantry.domain.files import FileRepository, StoredFile
from tenantry.domain.tenant_export import (
    FORMAT_VERSION,
    TASK_TYPE,
    ExportTable,
    FileEntry,
    Manifest,
    TableEntry,
    TenantExportRepository,
)
from tenantry.domain.users import Role, UserRepository

# The archive's own size limit is the tenant's quota: it holds every file of the tenant, so the
# size limit of one upload does not apply to it.
NO_SIZE_LIMIT = 2**62
# Ask whether the task was cancelled at most this often: each asking is a transaction.
CANCEL_CHECK_SECONDS = 1.0
# Progress: the rows up to here, then the files' bytes up to FILES_DONE, then storing.
ROWS_DONE, FILES_DONE = 10, 90


class TenantExportConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Nothing to choose: an export is of the whole tenant."""


def _unencodable(value: Any) -> str:
    # Values msgspec has no JSON for (an inet, a range): their PostgreSQL text form.
    return str(value)


_ROW = msgspec.json.Encoder(enc_hook=_unencodable)


class Checkpoint:
    """Asks whether the task was cancelled, at most once per ``CANCEL_CHECK_SECONDS``."""

    def __init__(self, context: TaskContext) -> None:
        self.context = context
        self.last = time.monotonic()

    async def __call__(self) -> None:
        if time.monotonic() - self.last >= CANCEL_CHECK_SECONDS:
            await self.context.check_cancelled()
            self.last = time.monotonic()


class TenantExport:
    """Task ``tenant.export``: started by ``POST /api/v1/tenant/export`` (owners only), never
    through the generic submit."""

    type: str = TASK_TYPE
    config_type: builtins.type[msgspec.Struct] = TenantExportConfig
    started_by = "POST /api/v1/tenant/export"
    page = 500
    files_page = 100

    async def run(self, context: TaskContext, config: TenantExportConfig) -> dict[str, Any]:  # noqa: ARG002 - no options
        await self._require_owner(context)
        started = context.clock.now()
        async with context.units() as uow:
            tenant = found(await uow.tenants.get(context.tenant_id), "No such tenant.")
            tables = await uow.repository(TenantExportRepository, context.tenant_id).tables()
            used, _ = await uow.repository(FileRepository, context.tenant_id).usage()
        checkpoint = Checkpoint(context)
        await context.check_cancelled()
        with tempfile.TemporaryFile() as spool, tempfile.TemporaryFile() as listing:
            # Created and closed in a thread too: closing writes the central directory.
            archive = await to_thread(zipfile.ZipFile, spool, "w", zipfile.ZIP_DEFLATED)
            try:
                entries: dict[str, TableEntry] = {}
                for done, table in enumerate(tables, start=1):
                    entries[table.name] = await self._table(
                        context, checkpoint, archive, table, started
                    )
                    await context.progress(done * ROWS_DONE // len(tables))
                files, size = await self._files(context, checkpoint, archive, listing, used)
                manifest = Manifest(
                    format_version=FORMAT_VERSION,
                    tenant_id=tenant.id,
                    tenant_slug=tenant.slug,
                    created_at=started,
                    tables=entries,
                )
                await to_thread(write_manifest, archive, manifest, listing)
            finally:
                await to_thread(archive.close)
            await context.progress(FILES_DONE)
            stored = await store_archive(
                context,
                spool,
                filename=f"{tenant.slug}-export-{started:%Y%m%dT%H%M%SZ}.zip",
                policy=export_policy(context.file_policy, max_bytes=NO_SIZE_LIMIT),
            )
        await context.progress(100)
        return {
            "file_id": str(stored.id),
            "size": stored.size,
            "rows": {name: entry.rows for name, entry in entries.items()},
            "files": files,
            "file_bytes": size,
        }

    async def _require_owner(self, context: TaskContext) -> None:
        """The one who asked must still be an active owner when the export runs: demoted or
        removed meanwhile, they get nothing."""
        requester = context.task.created_by
        user = None
        if requester is not None:
            async with context.units() as uow:
                user = await uow.repository(UserRepository, context.tenant_id).get(requester)
        if user is None or not user.is_active or Role.OWNER not in user.roles:
            raise Forbidden("Only the tenant's owners may export it; the requester is not one.")

    async def _table(
        self,
        context: TaskContext,
        checkpoint: Checkpoint,
        archive: zipfile.ZipFile,
        table: ExportTable,
        started: datetime,
    ) -> TableEntry:
        path = f"tables/{table.name}.jsonl"
        info = zipfile.ZipInfo(path, date_time=started.timetuple()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED
        # Its size is not known ahead: ZIP64 headers, in case it passes 2 GiB.
        entry = await to_thread(archive.open, info, "w", force_zip64=True)
        digest, rows, after = hashlib.sha256(), 0, None
        try:
            while True:
                await checkpoint()
                async with context.units() as uow:
                    page = await uow.repository(TenantExportRepository, context.tenant_id).rows(
                        table, after=after, limit=self.page
                    )
                if not page:
                    break
                data = b"".join([_ROW.encode(row) + b"\n" for row in page])
                await to_thread(copy, entry, digest, data)
                rows += len(page)
                if len(page) < self.page:
                    break
                after = tuple(page[-1][column] for column in table.key)
        finally:
            await to_thread(entry.close)
        return TableEntry(path=path, rows=rows, sha256=digest.hexdigest())

    async def _files(
        self,
        context: TaskContext,
        checkpoint: Checkpoint,
        archive: zipfile.ZipFile,
        listing: IO[bytes],
        used: int,
    ) -> tuple[int, int]:
        """Every live file's bytes into the archive, and its manifest entry into ``listing``
        (a line of JSON each); how many files and bytes."""
        count = size = 0
        after: UUID | None = None
        while True:
            await checkpoint()
            async with context.units() as uow:
                batch = await uow.repository(TenantExportRepository, context.tenant_id).live_files(
                    after=after, limit=self.files_page
                )
            for stored in batch:
                entry = await self._file(context, checkpoint, archive, stored)
                await to_thread(listing.write, msgspec.json.encode(entry) + b"\n")
                count, size = count + 1, size + entry.size
                span = FILES_DONE - ROWS_DONE
                await context.progress(ROWS_DONE + min(size * span // max(used, 1), span))
            if len(batch) < self.files_page:
                return count, size
            after = batch[-1].id

    async def _file(
        self,
        context: TaskContext,
        checkpoint: Checkpoint,
        archive: zipfile.ZipFile,
        stored: StoredFile,
    ) -> FileEntry:
        path = f"files/{stored.id}"
        info = zipfile.ZipInfo(path, date_time=stored.created_at.timetuple()[:6])
        # Stored as they are: most uploads (images, PDFs, zips) are compressed already.
        info.compress_type = zipfile.ZIP_STORED
        # The size the row records decides ZIP64 headers ahead of the bytes.
        info.file_size = stored.size
        entry = await to_thread(archive.open, info, "w")
        digest, size = hashlib.sha256(), 0
        try:
            async for chunk in context.storage.get(stored.storage_key):
                await to_thread(copy, entry, digest, chunk)
                size += len(chunk)
                await checkpoint()
        finally:
            await to_thread(entry.close)
        return FileEntry(id=stored.id, path=path, size=size, sha256=digest.hexdigest())


def copy(entry: IO[bytes], digest: Any, data: bytes) -> None:
    digest.update(data)
    entry.write(data)


def write_manifest(archive: zipfile.ZipFile, manifest: Manifest, listing: IO[bytes]) -> None:
    """``manifest.json``: the manifest's fields, then ``files`` streamed from ``listing``."""
    info = zipfile.ZipInfo("manifest.json", date_time=manifest.created_at.timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    listing.seek(0)
    with archive.open(info, "w", force_zip64=True) as entry:
        # The encoded fields with their closing brace replaced by the files' list.
        entry.write(msgspec.json.encode(manifest)[:-1] + b',"files":[')
        for number, line in enumerate(listing):
            entry.write((b"," if number else b"") + line.rstrip(b"\n"))
        entry.write(b"]}")

"""File use cases: streaming uploads held to the policy and the quota, and their reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from uuid import UUID

import msgspec

from tenantry.application.ownership import creator, require_may_destroy
from tenantry.domain.auth import Actor
from tenantry.domain.errors import Forbidden, found
from tenantry.domain.files import (
    OBJECTS_PREFIX,
    FilePolicy,
    FileRepository,
    Inspection,
    ObjectStorage,
    StoredFile,
    TooLarge,
    Usage,
    object_key,
    parse_object_key,
    safe_filename,
)
from tenantry.domain.ids import new_id
from tenantry.domain.ports import Clock, UnitOfWork
from tenantry.domain.repository import ListQuery

QUOTA_SETTING = "quota_bytes"


class Files:
    """The collaborators of every file use case."""

    def __init__(
        self, uow: UnitOfWork, *, storage: ObjectStorage, clock: Clock, policy: FilePolicy
    ) -> None:
        self.uow = uow
        self.storage = storage
        self.clock = clock
        self.policy = policy

    async def quota(self, tenant_id: UUID) -> int:
        tenant = await self.uow.tenants.get(tenant_id)
        value = tenant.settings.get(QUOTA_SETTING) if tenant else None
        return value if isinstance(value, int) and value >= 0 else self.policy.quota_bytes


class UploadFile:
    def __init__(self, files: Files, policy: FilePolicy | None = None) -> None:
        """``policy`` replaces the tenant-facing one for files the system writes itself."""
        self.files = files
        self.policy = policy or files.policy

    async def __call__(
        self,
        actor: Actor,
        *,
        filename: str | None,
        claimed_type: str | None,
        chunks: AsyncIterator[bytes],
    ) -> StoredFile:
        files, uow = self.files, self.files.uow
        async with uow:
            used, _ = await uow.repository(FileRepository, actor.tenant_id).usage()
            quota = await files.quota(actor.tenant_id)
        room = quota - used
        limit = min(self.policy.max_bytes, max(room, 0))
        inspection = Inspection(self.policy, limit=limit)
        file_id = new_id()
        key = object_key(actor.tenant_id, file_id)

        async def inspected() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                inspection.feed(chunk)
                yield chunk
            inspection.finish()

        try:
            await files.storage.put(key, inspected())
        except TooLarge:
            if inspection.size > self.policy.max_bytes:
                raise
            raise TooLarge(quota_detail(quota, used)) from None
        try:
            async with uow:
                repository = uow.repository(FileRepository, actor.tenant_id)
                stored = await repository.add(
                    id=file_id,
                    original_filename=safe_filename(filename),
                    size=inspection.size,
                    content_type=inspection.content_type or "application/octet-stream",
                    claimed_content_type=(claimed_type or None) and claimed_type[:255],
                    sha256=inspection.sha256,
                    metadata=inspection.metadata,
                    storage_key=key,
                    created_by=creator(actor),
                    created_at=files.clock.now(),
                )
                # The row lock makes the check and the commit one step: of two uploads racing
                # for the last bytes of the quota, the second counts the first's row. Taken
                # after the insert, it is held for the check and the commit only, so a
                # tenant's uploads queue on it as briefly as possible.
                await repository.lock_usage()
                used, _ = await repository.usage()  # this file's row included
                if used > quota:
                    raise TooLarge(quota_detail(quota, used - inspection.size))
                await uow.commit()
        except BaseException:
            # No row, no object: the bytes go when their row does not come.
            await files.storage.delete(key)
            raise
        return stored


def quota_detail(quota: int, used: int) -> str:
    return f"The tenant's storage quota of {quota} bytes is exhausted ({used} bytes used)."


class GetFile:
    def __init__(self, files: Files) -> None:
        self.files = files

    async def __call__(self, actor: Actor, file_id: UUID) -> StoredFile:
        async with self.files.uow as uow:
            return found(
                await uow.repository(FileRepository, actor.tenant_id).get(file_id), "No such file."
            )


class ListFiles:
    def __init__(self, files: Files) -> None:
        self.files = files

    async def __call__(
        self, actor: Actor, query: ListQuery, *, include_deleted: bool = False
    ) -> tuple[list[StoredFile], int]:
        if include_deleted and not actor.can_manage:
            raise Forbidden("Only the tenant's owners and admins may list deleted files.")
        async with self.files.uow as uow:
            return await uow.repository(FileRepository, actor.tenant_id).list(
                query, include_deleted=include_deleted
            )


class DeleteFile:
    """Soft delete: the row is marked, the bytes stay until the retention sweep."""

    def __init__(self, files: Files) -> None:
        self.files = files

    async def __call__(self, actor: Actor, file_id: UUID) -> None:
        async with self.files.uow as uow:
            files = uow.repository(FileRepository, actor.tenant_id)
            existing = found(await files.get(file_id), "No such file.")
            require_may_destroy(actor, existing.created_by, "this file")
            await files.soft_delete(file_id, self.files.clock.now())
            await uow.commit()


class GetUsage:
    def __init__(self, files: Files) -> None:
        self.files = files

    async def __call__(self, actor: Actor) -> Usage:
        async with self.files.uow as uow:
            used, count = await uow.repository(FileRepository, actor.tenant_id).usage()
            quota = await self.files.quota(actor.tenant_id)
        return Usage(bytes=used, files=count, quota_bytes=quota)


class DownloadUrl:
    def __init__(self, files: Files) -> None:
        self.files = files

    async def __call__(self, found: StoredFile) -> str | None:
        """A presigned URL for a file found by ``GetFile``, when the store gives one."""
        return await self.files.storage.download_url(
            found.storage_key, filename=found.original_filename, content_type=found.content_type
        )


class ReadFileContent:
    def __init__(self, files: Files) -> None:
        self.files = files

    def __call__(
        self, found: StoredFile, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """The bytes of a file found by ``GetFile`` (so of the caller's tenant); ``end`` is
        inclusive."""
        return self.files.storage.get(found.storage_key, start=start, end=end)


class SweepReport(msgspec.Struct, kw_only=True):
    purged: int = 0
    orphans: int = 0


class SweepFiles:
    """Purge soft-deleted files past their grace period, then objects no row speaks for.

    An object younger than ``orphan_age`` is left alone: an upload writes its object before its
    row, so a fresh object without a row may simply be an upload in progress.
    """

    def __init__(self, files: Files) -> None:
        self.files = files

    async def __call__(
        self, *, retention: timedelta, orphan_age: timedelta, batch: int = 500
    ) -> SweepReport:
        report = SweepReport()
        files, uow, now = self.files, self.files.uow, self.files.clock.now()
        async with uow:
            offset = 0
            while True:
                tenants, total = await uow.tenants.list(limit=batch, offset=offset)
                for tenant in tenants:
                    repository = uow.repository(FileRepository, tenant.id)
                    for stale in await repository.deleted_before(now - retention, limit=batch):
                        await files.storage.delete(stale.storage_key)
                        await repository.delete(stale.id)
                        report.purged += 1
                    await uow.commit()
                offset += batch
                if offset >= total:
                    break
            async for key, modified_at in files.storage.objects(OBJECTS_PREFIX):
                parsed = parse_object_key(key)
                if parsed is None or now - modified_at < orphan_age:
                    continue
                tenant_id, file_id = parsed
                if (
                    await uow.repository(FileRepository, tenant_id).get(
                        file_id, include_deleted=True
                    )
                    is None
                ):
                    await files.storage.delete(key)
                    report.orphans += 1
        return report

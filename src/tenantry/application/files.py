"""File use cases: streaming uploads held to the policy and the quota, and their reads.

The audit trail shows an upload's name, size, type and checksum, never its bytes or where
they are stored.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from uuid import UUID

import msgspec

from tenantry.application.audit import record, snapshot
from tenantry.application.ownership import creator, require_may_destroy
from tenantry.domain.auth import Actor
from tenantry.domain.errors import Forbidden, found
from tenantry.domain.files import (
    OBJECTS_PREFIX,
    FilePolicy,
    FileRepository,
    Inspection,
    ObjectStorage,
    QuotaRefused,
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
from tenantry.domain.usage import Counter, UsageMeter

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
        """The tenant's own quota setting (``QUOTA_SETTING``), else the policy's."""
        value = await self.uow.repository(FileRepository, tenant_id).quota_setting()
        valid = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        return value if valid else self.policy.quota_bytes


# An upload holds its quota ahead of its bytes: all it declares at once (up to the size limit),
# or steps of this much when it declares nothing, so a long upload asks once per step.
HOLD_STEP = 8 * 1024 * 1024
# How long a hold outlives its last step: an upload whose process died gives its bytes back
# after this (``release_expired``), and a live one renews its hold with every step.
HOLD_TTL = timedelta(minutes=15)


# An upload that declares at most this much holds nothing ahead: it is charged once, by the
# statement that writes its row, which checks the quota itself. One transaction instead of
# two; a refused one has streamed and stored at most this much, then deleted it.
UNHELD_BYTES = 1024 * 1024


class QuotaHold:
    """The bytes of the tenant's quota one upload holds while it streams, each step taken by
    one atomic statement in its own short transaction: no lock is held while bytes move."""

    def __init__(self, files: Files, tenant_id: UUID, file_id: UUID) -> None:
        self.files = files
        self.tenant_id = tenant_id
        self.file_id = file_id
        self.held = 0

    async def cover(self, size: int, *, step: int) -> None:
        """Hold at least ``size`` bytes in all, and ``step`` more than now when that fits (to
        ask less often); TooLarge when ``size`` does not fit in the quota."""
        files, uow = self.files, self.files.uow
        default_quota = files.policy.quota_bytes
        async with uow:
            repository = uow.repository(FileRepository, self.tenant_id)
            expires_at = files.clock.now() + HOLD_TTL
            need = max(size - self.held, 0)
            for amount in dict.fromkeys((max(step, need), need)):
                if amount and await repository.reserve(
                    self.file_id, amount, default_quota=default_quota, expires_at=expires_at
                ):
                    await uow.commit()
                    self.held += amount
                    return
            if not need:
                return
            # Refused: holds of uploads that died come back first, then the bytes needed.
            if await repository.release_expired(files.clock.now()) and await repository.reserve(
                self.file_id, need, default_quota=default_quota, expires_at=expires_at
            ):
                await uow.commit()
                self.held += need
                return
            await uow.commit()
            used, _ = await repository.usage()
            # For the refusal's answer: the statements that check the quota read it themselves.
            quota = await files.quota(self.tenant_id)
        raise TooLarge(quota_detail(quota, used))

    async def reclaim(self) -> bool:
        """Give back the tenant's holds of dead uploads; whether there were any."""
        async with self.files.uow as uow:
            released = await uow.repository(FileRepository, self.tenant_id).release_expired(
                self.files.clock.now()
            )
            await uow.commit()
        return released > 0

    async def release(self) -> None:
        async with self.files.uow as uow:
            await uow.repository(FileRepository, self.tenant_id).release(self.file_id)
            await uow.commit()


# What the trail shows of a file.
SHOWN = ("original_filename", "size", "content_type", "sha256")


class UploadFile:
    def __init__(
        self,
        files: Files,
        policy: FilePolicy | None = None,
        *,
        system: bool = False,
        usage: UsageMeter | None = None,
    ) -> None:
        """``policy`` replaces the tenant-facing one for files the system writes itself;
        ``system``: the system writes it (a task's output), so its event names no actor;
        ``usage``: where a tenant's uploaded bytes are counted (the API's uploads)."""
        self.files = files
        self.policy = policy or files.policy
        self.system = system
        self.usage = usage

    async def __call__(
        self,
        actor: Actor,
        *,
        filename: str | None,
        claimed_type: str | None,
        chunks: AsyncIterator[bytes],
        expected_size: int | None = None,
    ) -> StoredFile:
        """``expected_size``: at least the file's size when known (a request's length): a
        small upload then holds nothing ahead, a larger one holds it all in one step."""
        files = self.files
        limit = self.policy.max_bytes
        inspection = Inspection(self.policy, limit=limit)
        file_id = new_id()
        key = object_key(actor.tenant_id, file_id)
        hold = QuotaHold(files, actor.tenant_id, file_id)
        held_ahead = expected_size is None or expected_size > UNHELD_BYTES

        async def inspected() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                inspection.feed(chunk)
                if held_ahead and inspection.size > hold.held:
                    await hold.cover(inspection.size, step=min(HOLD_STEP, limit - hold.held))
                yield chunk
            inspection.finish()

        put = False
        try:
            if held_ahead and expected_size:
                await hold.cover(0, step=min(expected_size, limit))
            await files.storage.put(key, inspected())
            put = True
            return await self._add(actor, key, hold, inspection, filename, claimed_type)
        except BaseException:
            # No row, no object, no hold: what a failed upload took is given back. (A failed
            # put leaves no object.) Should either step fail too, the orphan sweep removes the
            # object and the hold expires: the upload's own error is the one to report.
            if put:
                with contextlib.suppress(Exception):
                    await files.storage.delete(key)
            if hold.held:
                with contextlib.suppress(Exception):
                    await hold.release()
            raise

    async def _add(
        self,
        actor: Actor,
        key: str,
        hold: QuotaHold,
        inspection: Inspection,
        filename: str | None,
        claimed_type: str | None,
    ) -> StoredFile:
        files, uow = self.files, self.files.uow
        row = {
            "id": hold.file_id,
            "original_filename": safe_filename(filename),
            "size": inspection.size,
            "content_type": inspection.content_type or "application/octet-stream",
            "claimed_content_type": (claimed_type or None) and claimed_type[:255],
            "sha256": inspection.sha256,
            "metadata": inspection.metadata,
            "storage_key": key,
            "created_by": creator(actor),
            "created_at": files.clock.now(),
        }
        # Refused once, it tries again after the holds of dead uploads came back; each try in
        # a transaction of its own (a refused one writes nothing, its event neither, and keeps
        # its hold). The row may be written by the commit, with its event, in one round trip.
        for reclaimed in (False, True):
            async with uow:
                try:
                    stored = await uow.repository(FileRepository, actor.tenant_id).add_reserved(
                        default_quota=files.policy.quota_bytes, **row
                    )
                    await record(
                        uow,
                        None if self.system else actor,
                        "file.uploaded",
                        ("file", stored.id),
                        tenant_id=actor.tenant_id,
                        changes={"after": snapshot(stored, SHOWN)},
                    )
                    await uow.commit()
                except QuotaRefused:
                    pass
                else:
                    if self.usage is not None:
                        self.usage.add(actor.tenant_id, Counter.BYTES_UPLOADED, stored.size)
                    return stored
            if reclaimed or not await hold.reclaim():
                break
        async with uow:
            used, _ = await uow.repository(FileRepository, actor.tenant_id).usage()
            quota = await files.quota(actor.tenant_id)
        raise TooLarge(quota_detail(quota, used))


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
            # One deleted meanwhile is gone for this request too (see DeleteProject).
            existing = found(
                await files.soft_delete(file_id, self.files.clock.now()), "No such file."
            )
            require_may_destroy(actor, existing.created_by, "this file")
            await record(
                uow,
                actor,
                "file.deleted",
                ("file", file_id),
                changes={"before": snapshot(existing, SHOWN)},
            )
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
    unfinished: int = 0


# An unfinished write this old is one whose process died: no upload lasts a day, and S3 dates
# a multipart upload from its start, not from its last part.
UNFINISHED_AGE = timedelta(days=1)


class SweepFiles:
    """Purge soft-deleted files past their grace period, then objects no row speaks for, then
    what uploads that died mid-write left in the store.

    An object younger than ``orphan_age`` is left alone: an upload writes its object before its
    row, so a fresh object without a row may simply be an upload in progress.
    """

    def __init__(self, files: Files) -> None:
        self.files = files

    async def __call__(
        self,
        *,
        retention: timedelta,
        orphan_age: timedelta,
        unfinished_age: timedelta = UNFINISHED_AGE,
        batch: int = 500,
    ) -> SweepReport:
        report = SweepReport()
        files, uow, now = self.files, self.files.uow, self.files.clock.now()
        async with uow:
            offset = 0
            while True:
                tenants, total = await uow.tenants.list(limit=batch, offset=offset)
                for tenant in tenants:
                    repository = uow.repository(FileRepository, tenant.id)
                    # Holds of uploads that died (kill -9) with no upload since to reclaim them.
                    await repository.release_expired(now)
                    purged = 0
                    for stale in await repository.deleted_before(now - retention, limit=batch):
                        await files.storage.delete(stale.storage_key)
                        await repository.delete(stale.id)
                        purged += 1
                    # One event per tenant and sweep, not one per file: the trail already has
                    # each file's deletion by its user.
                    if purged:
                        await record(
                            uow,
                            None,
                            "files.purged",
                            ("file", None),
                            tenant_id=tenant.id,
                            changes={"count": purged},
                        )
                    await uow.commit()
                    report.purged += purged
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
        report.unfinished = await files.storage.discard_unfinished(now - unfinished_age)
        return report

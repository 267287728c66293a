"""Object storage on local disk: the embedded default, under ``<data dir>/files``."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tenantry.domain.files import StorageFull

CHUNK = 256 * 1024
# Uploads are written in blocks of this much: one thread hop per block, not per chunk the
# multipart parser yields; a file of at most one block takes one hop, open to rename. Each
# system call in a hop hands the GIL back and forth with the event loop, which costs the loop
# more than the call (bench/README.md): a hop makes as few as it can, on a file descriptor.
WRITE_BLOCK = 1024 * 1024
# A write in progress goes to a hidden file named with this suffix, renamed into place when it
# is whole: one left behind is a write whose process died.
UNFINISHED = ".part"
# At most this many chunks go to one writev (Linux's IOV_MAX is 1024).
MAX_CHUNKS = 512
# A full disk, or the store's user out of its disk quota.
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT})


class LocalDiskStorage:
    """Writes go to a temporary file renamed into place, so a key holds a whole object or
    nothing. File I/O runs in threads: the event loop never waits on the disk."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        # Normalised as text, not resolved: resolve() asks the disk about every component, on
        # the event loop. Nothing under the root is a link the API did not make.
        path = Path(os.path.normpath(self.root / key))
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError(f"object key escapes the storage root: {key!r}")
        return path

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> None:
        path = self._path(key)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}{UNFINISHED}")
        # The temporary file's descriptor, once a thread has opened it.
        opened: list[int] = []
        # The chunks as they came, written by one writev: not copied into one buffer first.
        block: list[bytes] = []
        pending = 0
        try:
            async for chunk in chunks:
                block.append(chunk)
                pending += len(chunk)
                if len(block) == MAX_CHUNKS:
                    # A body trickled in tiny pieces would otherwise make a long list.
                    block = [b"".join(block)]
                if pending >= WRITE_BLOCK:
                    await _in_thread(_write, temporary, opened, block)
                    block, pending = [], 0
            await _in_thread(_finish, temporary, path, opened, block)
        except BaseException as error:
            if opened:
                os.close(opened.pop())
            temporary.unlink(missing_ok=True)
            if isinstance(error, OSError) and error.errno in NO_ROOM:
                raise StorageFull from error
            raise

    async def get(
        self, key: str, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        handle = await asyncio.to_thread(open, self._path(key), "rb")
        try:
            await asyncio.to_thread(handle.seek, start)
            remaining = None if end is None else end - start + 1
            while remaining is None or remaining > 0:
                size = CHUNK if remaining is None else min(CHUNK, remaining)
                chunk = await asyncio.to_thread(handle.read, size)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            handle.close()

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    async def objects(self, prefix: str) -> AsyncIterator[tuple[str, datetime]]:
        def walk() -> list[tuple[str, datetime]]:
            base = self.root / prefix
            if not base.exists():
                return []
            listed = []
            for path in base.rglob("*"):
                if path.name.startswith("."):
                    continue
                status = _status(path)
                if status is not None and stat.S_ISREG(status.st_mode):
                    modified = datetime.fromtimestamp(status.st_mtime, UTC)
                    listed.append((path.relative_to(self.root).as_posix(), modified))
            return listed

        for found in await asyncio.to_thread(walk):
            yield found

    async def discard_unfinished(self, before: datetime) -> int:
        def discard() -> int:
            discarded = 0
            for temporary in self.root.rglob(f".*{UNFINISHED}"):
                status = _status(temporary)
                if status is not None and datetime.fromtimestamp(status.st_mtime, UTC) < before:
                    temporary.unlink(missing_ok=True)
                    discarded += 1
            return discarded

        return await asyncio.to_thread(discard)

    async def download_url(self, key: str, *, filename: str, content_type: str) -> str | None:  # noqa: ARG002 - the port's signature
        """Local files have no URL of their own: the API streams them."""
        return None

    async def ping(self) -> None:
        def probe() -> None:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK):
                raise PermissionError(f"{self.root} is not writable")

        await asyncio.to_thread(probe)


async def _in_thread(function: Callable[..., None], *arguments: Any) -> None:
    """``function`` in a thread, waited for even when the caller is cancelled meanwhile: its
    clean-up must not close a descriptor that a write still running is using."""
    running = asyncio.get_running_loop().run_in_executor(None, function, *arguments)
    try:
        await asyncio.shield(running)
    except asyncio.CancelledError:
        await asyncio.wait([running])
        raise


def _write(temporary: Path, opened: list[int], block: list[bytes]) -> None:
    """All of the block, by one writev unless the kernel writes less (a full disk says so)."""
    if not opened:
        opened.append(_create(temporary))
    views: list[bytes | memoryview] = [chunk for chunk in block if chunk]
    while views:
        written = os.writev(opened[0], views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views:
            views[0] = memoryview(views[0])[written:]


def _finish(temporary: Path, path: Path, opened: list[int], rest: list[bytes]) -> None:
    """Write the last block, close and rename into place: a file of one block, from open to
    rename in one thread hop."""
    _write(temporary, opened, rest)
    os.close(opened.pop())
    os.replace(temporary, path)


def _status(path: Path) -> os.stat_result | None:
    """None for a file removed or renamed since a walk found it (an erasure, another sweep,
    an upload that finished)."""
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _create(temporary: Path) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        return os.open(temporary, flags, 0o666)
    except FileNotFoundError:
        # A tenant's first object: its directory, made once rather than checked every time.
        temporary.parent.mkdir(parents=True, exist_ok=True)
        return os.open(temporary, flags, 0o666)

"""Object storage on local disk: the embedded default, under ``<data dir>/files``."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

CHUNK = 256 * 1024
# Uploads are written in blocks of this much: one thread hop per block, not per chunk the
# multipart parser yields; a file of at most one block takes one hop, open to rename.
WRITE_BLOCK = 1024 * 1024


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
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        handle: BinaryIO | None = None
        block = bytearray()
        try:
            async for chunk in chunks:
                block += chunk
                if len(block) >= WRITE_BLOCK:
                    if handle is None:
                        handle = await asyncio.to_thread(_create, temporary)
                    await asyncio.to_thread(handle.write, block)
                    block = bytearray()
            await asyncio.to_thread(_complete, handle, temporary, path, block)
        except BaseException:
            if handle is not None:
                handle.close()
            temporary.unlink(missing_ok=True)
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
            return [
                (
                    path.relative_to(self.root).as_posix(),
                    datetime.fromtimestamp(path.stat().st_mtime, UTC),
                )
                for path in base.rglob("*")
                if path.is_file() and not path.name.startswith(".")
            ]

        for found in await asyncio.to_thread(walk):
            yield found

    async def download_url(self, key: str, *, filename: str, content_type: str) -> str | None:  # noqa: ARG002 - the port's signature
        """Local files have no URL of their own: the API streams them."""
        return None

    async def ping(self) -> None:
        def probe() -> None:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK):
                raise PermissionError(f"{self.root} is not writable")

        await asyncio.to_thread(probe)


def _create(temporary: Path) -> BinaryIO:
    try:
        return temporary.open("wb")
    except FileNotFoundError:
        # A tenant's first object: its directory, made once rather than checked every time.
        temporary.parent.mkdir(parents=True, exist_ok=True)
        return temporary.open("wb")


def _complete(handle: BinaryIO | None, temporary: Path, path: Path, rest: bytearray) -> None:
    """Write the last block, close and rename into place: one thread hop."""
    if handle is None:
        handle = _create(temporary)
    try:
        handle.write(rest)
    finally:
        handle.close()
    os.replace(temporary, path)

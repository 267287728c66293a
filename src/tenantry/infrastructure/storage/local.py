"""Object storage on local disk: the embedded default, under ``<data dir>/files``."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

CHUNK = 256 * 1024


class LocalDiskStorage:
    """Writes go to a temporary file renamed into place, so a key holds a whole object or
    nothing. File I/O runs in threads: the event loop never waits on the disk."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"object key escapes the storage root: {key!r}")
        return path

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> None:
        path = self._path(key)
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        handle = await asyncio.to_thread(open, temporary, "wb")
        try:
            async for chunk in chunks:
                await asyncio.to_thread(handle.write, chunk)
            await asyncio.to_thread(handle.close)
            await asyncio.to_thread(os.replace, temporary, path)
        except BaseException:
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

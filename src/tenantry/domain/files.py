"""Files: bytes in object storage, facts about them in the database.

The type of a file is what its first bytes say, never what the client claims; images are held
to a policy of formats and minimum size read from their headers.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime
from typing import Any, ClassVar, Protocol
from uuid import UUID

import msgspec

from tenantry.domain.errors import DomainError, Invalid
from tenantry.domain.repository import Repository

# Enough bytes to sniff every type below and to find a JPEG's size in typical files.
SNIFF_BYTES = 64 * 1024
# The last chunk of every PNG: no data, its type and its CRC.
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# A JPEG's end-of-image marker.
JPEG_END = b"\xff\xd9"

PNG, JPEG, WEBP, GIF = "image/png", "image/jpeg", "image/webp", "image/gif"
PDF, ZIP, TEXT, BINARY = (
    "application/pdf",
    "application/zip",
    "text/plain",
    "application/octet-stream",
)


class TooLarge(DomainError):
    """The upload passed a size limit (the file's or the tenant's quota)."""


class QuotaRefused(TooLarge):
    """The quota had no room for an upload's size when its row was to be written: nothing of
    that unit of work was. (Its use case answers with the quota's figures.)"""

    def __init__(self) -> None:
        super().__init__("The tenant's storage quota is exhausted.")


class UnsupportedType(DomainError):
    """The sniffed type is not allowed here."""


class StorageFull(DomainError):
    """The object store has no room for the bytes (its disk is full): nothing of them is
    kept. The operator's to fix; the upload may be sent again once they have."""

    def __init__(self) -> None:
        super().__init__("The file store is full: the upload was not kept. Try again later.")


class StoredFile(msgspec.Struct, kw_only=True, frozen=True):
    # What a list's ``q`` searches.
    search_field: ClassVar[str] = "original_filename"

    id: UUID
    tenant_id: UUID
    original_filename: str
    size: int
    content_type: str
    claimed_content_type: str | None
    sha256: str
    metadata: dict[str, Any]
    storage_key: str
    # The uploader; None for rows older than ownership, a deleted user, or the system's own.
    created_by: UUID | None
    created_at: datetime
    deleted_at: datetime | None = None


class Usage(msgspec.Struct, kw_only=True, frozen=True):
    bytes: int
    files: int
    quota_bytes: int


class FilePolicy(msgspec.Struct, kw_only=True, frozen=True):
    max_bytes: int
    quota_bytes: int
    allowed_types: frozenset[str]
    image_types: frozenset[str] = frozenset({PNG, JPEG, WEBP})
    min_width: int = 100
    min_height: int = 100
    # Pixels an image may declare: its header can claim 2^31 x 2^31 in a few bytes, and whoever
    # decodes it later would need exabytes. Pillow's MAX_IMAGE_PIXELS, by default.
    max_pixels: int = 89_478_485


OBJECTS_PREFIX = "tenants/"


def object_key(tenant_id: UUID, file_id: UUID) -> str:
    return f"{OBJECTS_PREFIX}{tenant_id}/files/{file_id}"


def parse_object_key(key: str) -> tuple[UUID, UUID] | None:
    parts = key.split("/")
    if len(parts) != 4 or parts[0] + "/" != OBJECTS_PREFIX or parts[2] != "files":
        return None
    try:
        return UUID(parts[1]), UUID(parts[3])
    except ValueError:
        return None


def safe_filename(name: str | None) -> str:
    """The client's file name without path parts or control characters, at most 255 long."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(c for c in base if c.isprintable()).strip()
    return cleaned[:255] or "upload"


def sniff(head: bytes) -> str:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return GIF
    if head.startswith(b"%PDF-"):
        return PDF
    if head.startswith(b"PK\x03\x04"):
        return ZIP
    if b"\x00" not in head:
        try:
            # A multi-byte character cut at the window's end is still text.
            head.decode("utf-8") if len(head) < SNIFF_BYTES else head[:-4].decode("utf-8")
        except UnicodeDecodeError:
            return BINARY
        return TEXT
    return BINARY


def image_size(kind: str, head: bytes) -> tuple[int, int] | None:
    """Width and height from an image's header bytes, or None when they are not there."""
    try:
        if kind == PNG and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            return width, height
        if kind == GIF:
            width, height = struct.unpack("<HH", head[6:10])
            return width, height
        if kind == WEBP:
            return _webp_size(head)
        if kind == JPEG:
            return _jpeg_size(head)
    except struct.error:
        return None
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


def _jpeg_segments(head: bytes) -> Iterator[tuple[int, int]]:
    """The marker and offset of each segment of a JPEG's header that ``head`` holds."""
    position = 2
    while position + 4 <= len(head) and head[position] == 0xFF:
        marker = head[position + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            position += 2
            continue
        yield marker, position
        position += 2 + int.from_bytes(head[position + 2 : position + 4], "big")


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    for marker, position in _jpeg_segments(head):
        # Start-of-frame markers, except DHT (C4), JPG (C8) and DAC (CC).
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", head[position + 5 : position + 9])
            return width, height
    return None


def _jpeg_scan(head: bytes) -> int | None:
    """Where a JPEG's first scan data starts, when ``head`` reaches it."""
    for marker, position in _jpeg_segments(head):
        if marker == 0xDA:
            return position + 2 + int.from_bytes(head[position + 2 : position + 4], "big")
    return None


class Inspection:
    """Follows an upload as it streams: size, SHA-256, the verdict on its first bytes and, for
    an image, whether its bytes reach the image's end."""

    def __init__(self, policy: FilePolicy, *, limit: int) -> None:
        self.policy = policy
        self.limit = limit
        self.size = 0
        self.digest = hashlib.sha256()
        self.head = bytearray()
        self.content_type: str | None = None
        self.metadata: dict[str, Any] = {}
        self.reached_end = True
        # What ends the image: a marker still to be seen, or a length its header states.
        self._end_marker = b""
        self._carry = b""
        self._stated_size = 0

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise TooLarge(f"The upload is larger than the {self.limit} bytes allowed.")
        self.digest.update(chunk)
        if self.content_type is None:
            room = SNIFF_BYTES - len(self.head)
            self.head += chunk[:room]
            if len(self.head) < SNIFF_BYTES:
                return
            self.judge()
            # The rest, a copy, is needed only by an image whose end is still to be found.
            chunk = chunk[room:] if self._end_marker and not self.reached_end else b""
        if not self.reached_end and self._end_marker:
            self._look_for_end(chunk)

    def finish(self) -> None:
        if self.size == 0:
            raise Invalid("The file is empty.", fields={"file": "must not be empty"})
        if self.content_type is None:
            self.judge()
        if not self.reached_end or self.size < self._stated_size:
            raise Invalid(
                "The image is cut short: its bytes stop before the image ends.",
                fields={"file": "is truncated"},
            )

    def judge(self) -> None:
        head = bytes(self.head)
        kind = sniff(head)
        if kind not in self.policy.allowed_types:
            raise UnsupportedType(f"Files of type {kind} are not accepted here.")
        if kind in self.policy.image_types:
            size = image_size(kind, head)
            if size is None:
                raise Invalid("The image is not readable.", fields={"file": "is not a valid image"})
            width, height = size
            # Judged from the header alone, before any more of the image is read or stored.
            if width * height > self.policy.max_pixels:
                raise Invalid(
                    f"The image is {width}x{height}; at most {self.policy.max_pixels} pixels "
                    "are accepted.",
                    fields={"file": f"is {width}x{height}, above the maximum"},
                )
            if width < self.policy.min_width or height < self.policy.min_height:
                raise Invalid(
                    f"The image is {width}x{height}; at least "
                    f"{self.policy.min_width}x{self.policy.min_height} is required.",
                    fields={"file": f"is {width}x{height}, below the minimum"},
                )
            self.metadata = {"width": width, "height": height}
            self._expect_end(kind, head)
        self.content_type = kind

    def _expect_end(self, kind: str, head: bytes) -> None:
        """Note what ends an image of this kind, and look for it in the head already read."""
        if kind == WEBP:
            # A RIFF file states its own length after its first four bytes.
            self._stated_size = int.from_bytes(head[4:8], "little") + 8
            return
        if kind == PNG:
            self.reached_end, self._end_marker = False, PNG_END
            self._look_for_end(head[8:])
        elif kind == JPEG:
            self.reached_end = False
            # An end marker may come before the scan (ending an Exif thumbnail) but never
            # inside it unescaped: the first one after the scan starts ends the image.
            start = _jpeg_scan(head)
            if start is not None:
                self._end_marker = JPEG_END
                self._look_for_end(head[start:])
            elif len(head) >= SNIFF_BYTES:
                # The scan starts past the window: cannot be told cheaply.
                self.reached_end = True

    def _look_for_end(self, data: bytes) -> None:
        # The carry is the marker's length less one, so a marker split across chunks is found.
        marker = self._end_marker
        if marker in data or marker in self._carry + data[: len(marker) - 1]:
            self.reached_end = True
        else:
            self._carry = (self._carry + data[1 - len(marker) :])[1 - len(marker) :]

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()


class FileRepository(Repository[StoredFile], Protocol):
    """File rows of one tenant."""

    async def usage(self) -> tuple[int, int]:
        """Bytes and count of the tenant's live files."""
        ...

    async def quota_setting(self) -> Any:
        """The tenant's own ``quota_bytes`` setting as stored; None when it has none."""
        ...

    async def reserve(
        self, file_id: UUID, size: int, *, default_quota: int, expires_at: datetime
    ) -> bool:
        """Hold ``size`` more bytes of the tenant's quota for the upload of ``file_id``, until
        ``expires_at``, if they fit beside its live files and every hold: checked and taken in
        one step, so concurrent uploads never hold more than the quota between them. The quota
        is the tenant's own setting when it is a whole number of bytes, else
        ``default_quota``."""
        ...

    async def add_reserved(self, *, default_quota: int, **values: Any) -> StoredFile:
        """Add the file's row and turn its upload's hold into usage of exactly its size, in one
        step, which the unit of work's commit may take (the row as it is stored is returned
        now). QuotaRefused, here or from that commit, and nothing written, when the size is
        past what the upload still holds and no longer fits in the quota (as for
        :meth:`reserve`); Unauthenticated, and nothing written, when the tenant is no longer
        active (suspended or erased while the upload streamed)."""
        ...

    async def release(self, file_id: UUID) -> None:
        """Give back what the upload of ``file_id`` holds."""
        ...

    async def release_expired(self, now: datetime) -> int:
        """Give back the holds that expired before ``now`` (their uploads died); the bytes."""
        ...

    async def deleted_before(self, cutoff: datetime, *, limit: int) -> Sequence[StoredFile]:
        """Soft-deleted files whose grace period ended before ``cutoff``."""
        ...


class ObjectStorage(Protocol):
    """Where file bytes live. Keys are ``tenants/{tenant_id}/files/{file_id}``."""

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> None:
        """Store the stream under ``key``; on any error nothing is left under it, and
        StorageFull when the store has no room for it."""
        ...

    def get(self, key: str, *, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes from ``start`` to ``end`` (inclusive), streamed."""
        ...

    async def delete(self, key: str) -> None: ...

    def objects(self, prefix: str) -> AsyncIterator[tuple[str, datetime]]:
        """Every key under ``prefix`` with its last modification time."""
        ...

    async def discard_unfinished(self, before: datetime) -> int:
        """Remove what writes that never finished (their process died mid-upload) left behind,
        if they were last written to before ``before``; how many."""
        ...

    async def download_url(self, key: str, *, filename: str, content_type: str) -> str | None:
        """A short-lived URL the client can fetch the object from directly, if the store has one."""
        ...

    async def ping(self) -> None: ...

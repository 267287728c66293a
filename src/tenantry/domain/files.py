"""Files: bytes in object storage, facts about them in the database.

The type of a file is what its first bytes say, never what the client claims; images are held
to a policy of formats and minimum size read from their headers.
"""

from __future__ import annotations

import hashlib
import struct
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from tenantry.domain.errors import DomainError, Invalid

# Enough bytes to sniff every type below and to find a JPEG's size in typical files.
SNIFF_BYTES = 64 * 1024

PNG, JPEG, WEBP, GIF = "image/png", "image/jpeg", "image/webp", "image/gif"
PDF, ZIP, TEXT, BINARY = (
    "application/pdf",
    "application/zip",
    "text/plain",
    "application/octet-stream",
)


class TooLarge(DomainError):
    """The upload passed a size limit (the file's or the tenant's quota)."""


class UnsupportedType(DomainError):
    """The sniffed type is not allowed here."""


class StoredFile(msgspec.Struct, kw_only=True, frozen=True):
    id: UUID
    tenant_id: UUID
    original_filename: str
    size: int
    content_type: str
    claimed_content_type: str | None
    sha256: str
    metadata: dict[str, Any]
    storage_key: str
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


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    position = 2
    while position + 9 < len(head):
        if head[position] != 0xFF:
            return None
        marker = head[position + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            position += 2
            continue
        length = int.from_bytes(head[position + 2 : position + 4], "big")
        # Start-of-frame markers, except DHT (C4), JPG (C8) and DAC (CC).
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", head[position + 5 : position + 9])
            return width, height
        position += 2 + length
    return None


class Inspection:
    """Follows an upload as it streams: size, SHA-256, and the verdict on its first bytes."""

    def __init__(self, policy: FilePolicy, *, limit: int) -> None:
        self.policy = policy
        self.limit = limit
        self.size = 0
        self.digest = hashlib.sha256()
        self.head = bytearray()
        self.content_type: str | None = None
        self.metadata: dict[str, Any] = {}

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise TooLarge(f"The upload is larger than the {self.limit} bytes allowed.")
        self.digest.update(chunk)
        if self.content_type is None:
            self.head += chunk[: SNIFF_BYTES - len(self.head)]
            if len(self.head) >= SNIFF_BYTES:
                self.judge()

    def finish(self) -> None:
        if self.size == 0:
            raise Invalid("The file is empty.", fields={"file": "must not be empty"})
        if self.content_type is None:
            self.judge()

    def judge(self) -> None:
        kind = sniff(bytes(self.head))
        if kind not in self.policy.allowed_types:
            raise UnsupportedType(f"Files of type {kind} are not accepted here.")
        if kind in self.policy.image_types:
            size = image_size(kind, bytes(self.head))
            if size is None:
                raise Invalid("The image is not readable.", fields={"file": "is not a valid image"})
            width, height = size
            if width < self.policy.min_width or height < self.policy.min_height:
                raise Invalid(
                    f"The image is {width}x{height}; at least "
                    f"{self.policy.min_width}x{self.policy.min_height} is required.",
                    fields={"file": f"is {width}x{height}, below the minimum"},
                )
            self.metadata = {"width": width, "height": height}
        self.content_type = kind

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()

from __future__ import annotations

import hashlib
import struct
from collections.abc import AsyncIterator
from uuid import uuid4

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenantry.application.files import Files, GetUsage, ListFiles, ReadFileContent, UploadFile
from tenantry.domain.auth import Actor
from tenantry.domain.errors import Forbidden, Invalid
from tenantry.domain.files import (
    JPEG,
    PNG,
    SNIFF_BYTES,
    TEXT,
    WEBP,
    FilePolicy,
    Inspection,
    TooLarge,
    UnsupportedType,
    image_size,
    safe_filename,
    sniff,
)
from tenantry.domain.ids import new_id
from tenantry.domain.projects import ListQuery
from tenantry.domain.users import Role

from .fakes import FakeStorage, World

POLICY = FilePolicy(
    max_bytes=10_000, quota_bytes=10**9, allowed_types=frozenset({PNG, JPEG, WEBP, TEXT})
)


def png_head(width: int, height: int) -> bytes:
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + b"IHDR"
        + struct.pack(">II", width, height)
        + b"\x08\x02\x00\x00\x00"
    )


def jpeg_head(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00" + bytes(9)
    sof0 = b"\xff\xc0" + struct.pack(">HBHH", 17, 8, height, width) + bytes(10)
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xda"


def webp_vp8x(width: int, height: int) -> bytes:
    return (
        b"RIFF\x00\x00\x00\x00WEBPVP8X"
        + bytes(8)
        + (width - 1).to_bytes(3, "little")
        + (height - 1).to_bytes(3, "little")
    )


@given(st.integers(1, 65535), st.integers(1, 65535))
def test_image_sizes_are_read_from_headers(width: int, height: int) -> None:
    assert image_size(PNG, png_head(width, height)) == (width, height)
    assert image_size(JPEG, jpeg_head(width, height)) == (width, height)
    assert image_size(WEBP, webp_vp8x(width, height)) == (width, height)


def test_sniffing_ignores_names_and_claims() -> None:
    assert sniff(png_head(1, 1)) == PNG
    assert sniff(jpeg_head(1, 1)) == JPEG
    assert sniff(webp_vp8x(1, 1)) == WEBP
    assert sniff(b"%PDF-1.7") == "application/pdf"
    assert sniff("héllo".encode()) == TEXT
    assert sniff(b"MZ\x90\x00") == "application/octet-stream"


@given(st.binary(max_size=SNIFF_BYTES + 10))
def test_sniff_and_size_never_crash(head: bytes) -> None:
    kind = sniff(head)
    image_size(kind, head)


def inspect(data: bytes, chunk: int = 1000, policy: FilePolicy = POLICY) -> Inspection:
    inspection = Inspection(policy, limit=policy.max_bytes)
    for start in range(0, len(data), chunk):
        inspection.feed(data[start : start + chunk])
    inspection.finish()
    return inspection


@given(
    st.binary(min_size=1, max_size=9_000).map(lambda b: b.replace(b"\x00", b"a")),
    st.integers(1, 5000),
)
def test_size_and_checksum_do_not_depend_on_chunking(data: bytes, chunk: int) -> None:
    try:
        inspection = inspect(data, chunk)
    except (UnsupportedType, Invalid):
        return  # refused by the policy (a binary, an unreadable image): nothing to measure
    assert inspection.size == len(data)
    assert inspection.sha256 == hashlib.sha256(data).hexdigest()


def test_the_limit_stops_the_stream() -> None:
    with pytest.raises(TooLarge):
        inspect(b"a" * 10_001)


def test_policy_verdicts() -> None:
    with pytest.raises(UnsupportedType):
        inspect(b"MZ\x00\x00" * 10)
    with pytest.raises(Invalid, match="50x60"):
        inspect(png_head(50, 60))
    with pytest.raises(Invalid, match="empty"):
        inspect(b"")
    assert inspect(png_head(300, 200)).metadata == {"width": 300, "height": 200}


def test_filenames_lose_paths_and_control_characters() -> None:
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("C:\\Users\\x\\a\x00b.txt") == "ab.txt"
    assert safe_filename("") == "upload"
    assert len(safe_filename("a" * 1000)) == 255


def test_ids_are_uuid7_and_ordered() -> None:
    ids = [new_id() for _ in range(50)]
    assert all(i.version == 7 for i in ids)
    assert [i.int >> 80 for i in ids] == sorted(i.int >> 80 for i in ids)


async def chunks_of(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def files_world(quota: int = 10**9) -> tuple[World, FakeStorage, Files]:
    world = World()
    storage = FakeStorage()
    policy = msgspec.structs.replace(POLICY, quota_bytes=quota)
    return world, storage, Files(world.uow, storage=storage, clock=world.clock, policy=policy)


ACTOR = Actor(user_id=uuid4(), tenant_id=uuid4(), roles=(Role.MEMBER,))


async def test_upload_stores_bytes_and_row_under_the_tenant_key() -> None:
    world, storage, files = files_world()
    data = png_head(200, 100) + bytes(500)
    stored = await UploadFile(files)(
        ACTOR, filename="a.png", claimed_type="text/html", chunks=chunks_of(data)
    )
    assert stored.storage_key == f"tenants/{ACTOR.tenant_id}/files/{stored.id}"
    assert storage.objects[stored.storage_key] == data
    assert stored.claimed_content_type == "text/html"
    assert stored.content_type == PNG
    assert world.uow.committed.files[stored.id] == stored
    body = b"".join([c async for c in ReadFileContent(files)(stored, start=2, end=5)])
    assert body == data[2:6]


async def test_a_refused_upload_leaves_no_object_and_no_row() -> None:
    world, storage, files = files_world(quota=1_500)
    with pytest.raises(UnsupportedType):
        await UploadFile(files)(
            ACTOR, filename="x", claimed_type=None, chunks=chunks_of(b"MZ\x00" * 10)
        )
    await UploadFile(files)(
        ACTOR, filename="a.txt", claimed_type=None, chunks=chunks_of(b"a" * 1_000)
    )
    with pytest.raises(TooLarge, match="quota"):
        await UploadFile(files)(
            ACTOR, filename="b.txt", claimed_type=None, chunks=chunks_of(b"b" * 1_000)
        )
    assert len(storage.objects) == 1
    assert len(world.uow.committed.files) == 1
    assert (await GetUsage(files)(ACTOR)).bytes == 1_000


async def test_members_cannot_list_deleted_files() -> None:
    _, _, files = files_world()
    with pytest.raises(Forbidden):
        await ListFiles(files)(ACTOR, ListQuery(), include_deleted=True)

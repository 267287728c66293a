from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from uuid import UUID, uuid4

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenantry.application.files import (
    UNHELD_BYTES,
    DeleteFile,
    Files,
    GetUsage,
    ListFiles,
    ReadFileContent,
    SweepFiles,
    UploadFile,
)
from tenantry.domain.audit import AuditEvent
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
from tenantry.domain.repository import ListQuery
from tenantry.domain.tenants import Tenant, TenantStatus
from tenantry.domain.users import Role

from .fakes import FakeStorage, FileHold, World

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


# The last chunk of every PNG: length 0, "IEND", and its CRC.
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# Entropy-coded data never holds 0xFF unescaped, so this holds no marker.
SCAN = bytes(range(255)) * 4


def png_file(width: int, height: int, body: bytes = SCAN) -> bytes:
    head = png_head(width, height)
    idat = (
        struct.pack(">I", len(body))
        + b"IDAT"
        + body
        + struct.pack(">I", zlib.crc32(b"IDAT" + body))
    )
    return head + struct.pack(">I", zlib.crc32(head[12:])) + idat + PNG_END


def jpeg_file(width: int, height: int, scan: bytes = SCAN, *, before_scan: bytes = b"") -> bytes:
    start_of_scan = b"\xff\xda" + struct.pack(">H", 12) + bytes(10)
    return jpeg_head(width, height)[:-2] + before_scan + start_of_scan + scan + b"\xff\xd9"


def webp_file(width: int, height: int, body: bytes = SCAN) -> bytes:
    chunks = webp_vp8x(width, height)[8:] + body
    return b"RIFF" + len(chunks).to_bytes(4, "little") + chunks


# An Exif thumbnail: a whole JPEG, end marker included, ahead of the main image's scan.
EXIF = b"Exif\x00\x00" + jpeg_file(1, 1, b"")
THUMBNAIL = b"\xff\xe1" + struct.pack(">H", 2 + len(EXIF)) + EXIF


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
    assert inspect(png_file(300, 200)).metadata == {"width": 300, "height": 200}


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


def files_world(
    quota: int = 10**9, max_bytes: int | None = None
) -> tuple[World, FakeStorage, Files]:
    world = World()
    storage = FakeStorage()
    policy = msgspec.structs.replace(
        POLICY, quota_bytes=quota, max_bytes=max_bytes or POLICY.max_bytes
    )
    return world, storage, Files(world.uow, storage=storage, clock=world.clock, policy=policy)


ACTOR = Actor(user_id=uuid4(), tenant_id=uuid4(), roles=(Role.MEMBER,))


async def test_upload_stores_bytes_and_row_under_the_tenant_key() -> None:
    world, storage, files = files_world()
    data = png_file(200, 100)
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


async def test_a_large_upload_holds_its_quota_while_it_streams() -> None:
    world, _, files = files_world(quota=10 * UNHELD_BYTES, max_bytes=10**9)
    data = b"t" * (2 * UNHELD_BYTES)
    held: list[int] = []

    async def watched() -> AsyncIterator[bytes]:
        async for chunk in chunks_of(data, 256 * 1024):
            held.append(sum(h.bytes for h in world.uow.committed.tables[FileHold].values()))
            yield chunk

    stored = await UploadFile(files)(
        ACTOR, filename="big.txt", claimed_type=None, chunks=watched(), expected_size=len(data)
    )
    assert set(held) == {len(data)}  # the whole declared length, held before the first byte
    assert world.uow.committed.tables[FileHold] == {}
    assert (await GetUsage(files)(ACTOR)).bytes == stored.size == len(data)


async def test_an_upload_past_the_quota_stops_mid_stream_and_gives_its_hold_back() -> None:
    world, storage, files = files_world(quota=UNHELD_BYTES + UNHELD_BYTES // 2, max_bytes=10**9)
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while True:
            sent += 64 * 1024
            yield b"u" * 64 * 1024

    # No declared length: held step by step as the bytes come.
    with pytest.raises(TooLarge, match="quota"):
        await UploadFile(files)(ACTOR, filename="u.txt", claimed_type=None, chunks=endless())
    assert sent <= UNHELD_BYTES + UNHELD_BYTES // 2 + 64 * 1024
    assert world.uow.committed.tables[FileHold] == {}
    assert storage.objects == {}
    assert (await GetUsage(files)(ACTOR)).bytes == 0


async def test_members_cannot_list_deleted_files() -> None:
    _, _, files = files_world()
    with pytest.raises(Forbidden):
        await ListFiles(files)(ACTOR, ListQuery(), include_deleted=True)


def test_an_image_past_the_pixel_cap_is_refused_from_its_header() -> None:
    # Tens of bytes declaring 2^31-1 squared: refused as soon as the header is read.
    bomb = png_file(2_147_483_647, 2_147_483_647, body=b"")
    assert len(bomb) < 70
    with pytest.raises(Invalid, match="2147483647x2147483647"):
        inspect(bomb)
    capped = msgspec.structs.replace(POLICY, max_pixels=300 * 200)
    for image in (png_file, jpeg_file, webp_file):
        assert inspect(image(300, 200), policy=capped).metadata == {"width": 300, "height": 200}
        assert inspect(image(200, 300), policy=capped).metadata == {"width": 200, "height": 300}
        with pytest.raises(Invalid, match="at most 60000 pixels"):
            inspect(image(301, 200), policy=capped)


BIG = msgspec.structs.replace(POLICY, max_bytes=10**6)
# Past the sniffing window, so the end is found in chunks fed after the verdict on the head.
LONG_SCAN = SCAN * (SNIFF_BYTES // len(SCAN) + 10)


@pytest.mark.parametrize(
    "whole",
    [
        png_file(300, 200),
        png_file(300, 200, LONG_SCAN),
        jpeg_file(300, 200),
        jpeg_file(300, 200, LONG_SCAN, before_scan=THUMBNAIL),
        webp_file(300, 200),
        webp_file(300, 200, LONG_SCAN),
    ],
    ids=["png", "long-png", "jpeg", "long-jpeg-with-thumbnail", "webp", "long-webp"],
)
def test_an_image_cut_short_is_refused(whole: bytes) -> None:
    for chunk in (1, 7, 1000, len(whole)):
        assert inspect(whole, chunk, BIG).metadata == {"width": 300, "height": 200}
    for cut in (len(whole) - 1, len(whole) - 12, len(whole) // 2, 60):
        with pytest.raises(Invalid, match=r"cut short|not readable"):
            inspect(whole[:cut], 1000, BIG)


def test_bytes_after_an_images_end_are_not_a_cut() -> None:
    # A motion photo is a JPEG with a video after its end marker.
    inspect(jpeg_file(300, 200) + b"ftypmp42" + bytes(1000), policy=BIG)
    inspect(png_file(300, 200) + b"\n", policy=BIG)
    inspect(webp_file(300, 200) + bytes(3), policy=BIG)


WITH_THUMBNAIL = jpeg_file(300, 200, SCAN * 2, before_scan=THUMBNAIL)


# Cut to no less than the header up to the frame (40 bytes), so what is left is still a JPEG.
@given(st.integers(1, 3000), st.integers(40, len(WITH_THUMBNAIL) - 1))
def test_where_the_chunks_split_an_images_end_does_not_matter(chunk: int, cut: int) -> None:
    assert inspect(WITH_THUMBNAIL, chunk, BIG).metadata == {"width": 300, "height": 200}
    with pytest.raises(Invalid, match="cut short"):
        inspect(WITH_THUMBNAIL[:cut], chunk, BIG)


def events(world: World) -> list[AuditEvent]:
    """The committed trail, oldest first."""
    return sorted(world.uow.committed.rows_of(AuditEvent).values(), key=lambda e: e.id)


async def test_an_upload_and_a_delete_are_one_event_each_and_refused_uploads_none() -> None:
    world, _, files = files_world(quota=1_500)
    for refused, chunks, error in (
        ("x.exe", chunks_of(b"MZ\x00" * 10), UnsupportedType),  # 415
        ("big.txt", chunks_of(b"a" * 20_000), TooLarge),  # 413: past the size limit
    ):
        with pytest.raises(error):
            await UploadFile(files)(ACTOR, filename=refused, claimed_type=None, chunks=chunks)
    data = b"secret bytes\n" * 50
    stored = await UploadFile(files)(
        ACTOR, filename="notes.txt", claimed_type="text/plain", chunks=chunks_of(data)
    )
    with pytest.raises(TooLarge, match="quota"):
        await UploadFile(files)(
            ACTOR, filename="over.txt", claimed_type=None, chunks=chunks_of(b"b" * 1_000)
        )
    [uploaded] = events(world)
    assert (uploaded.action, uploaded.actor_type, uploaded.actor_id, uploaded.target_id) == (
        "file.uploaded",
        "user",
        ACTOR.user_id,
        stored.id,
    )
    assert uploaded.changes == {
        "after": {
            "original_filename": "notes.txt",
            "size": len(data),
            "content_type": TEXT,
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    }
    # Neither the bytes nor where they are stored.
    assert "secret" not in repr(uploaded)
    assert stored.storage_key not in repr(uploaded)

    await DeleteFile(files)(ACTOR, stored.id)
    deleted = events(world)[-1]
    assert (deleted.action, deleted.actor_id, deleted.target_id) == (
        "file.deleted",
        ACTOR.user_id,
        stored.id,
    )
    assert deleted.changes["before"]["original_filename"] == "notes.txt"
    assert stored.storage_key not in repr(deleted)
    assert len(events(world)) == 2


async def test_a_file_the_system_writes_is_the_systems_upload() -> None:
    world, _, files = files_world()
    await UploadFile(files, system=True)(
        ACTOR, filename="export.txt", claimed_type=None, chunks=chunks_of(b"rows\n")
    )
    [uploaded] = events(world)
    assert (uploaded.actor_type, uploaded.actor_id, uploaded.tenant_id) == (
        "system",
        None,
        ACTOR.tenant_id,
    )


class Listing:
    """The fake store as the sweep sees it: what it lists, all of it long written."""

    def __init__(self, storage: FakeStorage) -> None:
        self.storage = storage

    async def delete(self, key: str) -> None:
        await self.storage.delete(key)

    async def objects(self, prefix: str) -> AsyncIterator[tuple[str, datetime]]:
        for key in list(self.storage.objects):
            yield key, datetime(2000, 1, 1).astimezone()

    async def discard_unfinished(self, before: datetime) -> int:
        return await self.storage.discard_unfinished(before)


async def test_a_sweep_records_one_event_per_tenant_that_lost_files_and_none_otherwise() -> None:
    world, storage, files = files_world()
    other = Actor(user_id=uuid4(), tenant_id=uuid4(), roles=(Role.MEMBER,))
    for actor in (ACTOR, other):
        now = world.clock.now()
        world.uow.committed.tenants[actor.tenant_id] = Tenant(
            id=actor.tenant_id,
            name=str(actor.tenant_id),
            slug=str(actor.tenant_id),
            status=TenantStatus.ACTIVE,
            settings={},
            created_at=now,
            updated_at=now,
        )
    removed: list[UUID] = []
    for name in ("a.txt", "b.txt", "kept.txt"):
        stored = await UploadFile(files)(
            ACTOR, filename=name, claimed_type=None, chunks=chunks_of(b"text\n")
        )
        if name != "kept.txt":
            await DeleteFile(files)(ACTOR, stored.id)
            removed.append(stored.id)
    await UploadFile(files)(other, filename="o.txt", claimed_type=None, chunks=chunks_of(b"o\n"))
    before = len(events(world))
    world.clock.advance(days=30)
    sweeping = Files(world.uow, storage=Listing(storage), clock=world.clock, policy=files.policy)  # type: ignore[arg-type]
    report = await SweepFiles(sweeping)(retention=timedelta(days=7), orphan_age=timedelta(hours=1))
    assert report.purged == 2
    [purged] = events(world)[before:]
    assert (purged.action, purged.actor_type, purged.actor_id, purged.tenant_id) == (
        "files.purged",
        "system",
        None,
        ACTOR.tenant_id,
    )
    assert (purged.target_type, purged.target_id, purged.changes) == ("file", None, {"count": 2})
    # Nothing left to purge: no event.
    await SweepFiles(sweeping)(retention=timedelta(days=7), orphan_age=timedelta(hours=1))
    assert len(events(world)) == before + 1

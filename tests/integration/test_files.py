"""Files over HTTP on local disk: streaming uploads, the policy, the quota and ranged reads."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import struct
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest
import uvicorn
from litestar.testing import AsyncTestClient

from tenantry import bootstrap
from tenantry.application.files import SweepFiles
from tenantry.config import Settings
from tenantry.domain.files import StorageFull
from tenantry.infrastructure.embedded import free_port
from tenantry.infrastructure.storage import local

from ..conftest import Client, LogLines, captured_logs, plain_url, uvicorn_serving
from .identity import add_user, bearer, login, owner_session
from .test_audit import trail
from .test_faults import s3_client
from .test_health import assert_problem


def png(width: int, height: int, body: int = 2000) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    ihdr = (
        struct.pack(">I", 13) + b"IHDR" + header + struct.pack(">I", zlib.crc32(b"IHDR" + header))
    )
    end = b"\x00\x00\x00\x00IEND\xaeB`\x82"
    return b"\x89PNG\r\n\x1a\n" + ihdr + bytes(range(256)) * (body // 256 + 1) + end


def upload(
    data: bytes, name: str = "photo.png", kind: str = "image/png"
) -> dict[str, tuple[str, bytes, str]]:
    return {"file": (name, data, kind)}


def on_storage(settings: Settings, backend: str, s3_url: str) -> Settings:
    """``settings`` storing files on local disk, or on the moto S3 server in a bucket of their
    own, with small parts so that small files cross part boundaries."""
    if backend == "local":
        return settings
    return msgspec.structs.replace(
        settings,
        storage_backend="s3",
        s3_endpoint_url=s3_url,
        s3_bucket=f"test-{uuid.uuid4().hex[:12]}",
        s3_access_key_id=os.environ.get("TENANTRY_TEST_S3_ACCESS_KEY_ID", "test"),
        s3_secret_access_key=os.environ.get("TENANTRY_TEST_S3_SECRET_ACCESS_KEY", "test"),
        s3_part_size_mib=5,
    )


@pytest.fixture(params=["local", "s3"])
def settings(settings: Settings, s3_url: str, request: pytest.FixtureRequest) -> Settings:
    """Every test here runs on local disk and on S3."""
    return on_storage(settings, request.param, s3_url)


def stored_objects(settings: Settings) -> list[str]:
    if settings.storage_backend == "s3":
        client = s3_client(settings)
        listed = client.list_objects_v2(Bucket=settings.s3_bucket)
        uploads = client.list_multipart_uploads(Bucket=settings.s3_bucket).get("Uploads", [])
        return [o["Key"] for o in listed.get("Contents", [])] + [u["Key"] for u in uploads]
    root = Path(settings.files_dir or "")
    return [str(p) for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def test_round_trip_with_checksum_and_ranges(client: Client, settings: Settings) -> None:
    owner = await owner_session(client, "acme")
    data = png(640, 480)
    created = await client.post(
        "/api/v1/files", headers=owner, files=upload(data, "../../etc/Phöto.png")
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["size"] == len(data)
    assert body["content_type"] == "image/png"
    assert body["metadata"] == {"width": 640, "height": 480}
    assert body["original_filename"] == "Phöto.png"

    content = await client.get(f"/api/v1/files/{body['id']}/content", headers=owner)
    assert content.status_code == 200
    assert content.content == data
    assert content.headers["content-type"] == "image/png"
    assert content.headers["content-length"] == str(len(data))
    assert "filename*=UTF-8''Ph%C3%B6to.png" in content.headers["content-disposition"]

    part = await client.get(
        f"/api/v1/files/{body['id']}/content", headers={**owner, "Range": "bytes=10-19"}
    )
    assert part.status_code == 206
    assert part.content == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    tail = await client.get(
        f"/api/v1/files/{body['id']}/content", headers={**owner, "Range": "bytes=-5"}
    )
    assert tail.content == data[-5:]
    beyond = await client.get(
        f"/api/v1/files/{body['id']}/content", headers={**owner, "Range": f"bytes={len(data)}-"}
    )
    assert_problem(beyond, 416)

    meta = (await client.get(f"/api/v1/files/{body['id']}", headers=owner)).json()
    assert meta == body
    assert len(stored_objects(settings)) == 1


async def test_a_text_file_is_sniffed_not_trusted(client: Client) -> None:
    owner = await owner_session(client, "acme")
    created = await client.post(
        "/api/v1/files",
        headers=owner,
        files=upload(b"hello, world\n" * 10, "notes.exe", "application/x-msdownload"),
    )
    assert created.status_code == 201
    assert created.json()["content_type"] == "text/plain"


async def test_a_renamed_binary_is_415_and_leaves_nothing(
    client: Client, settings: Settings
) -> None:
    owner = await owner_session(client, "acme")
    binary = b"MZ\x90\x00\x03\x00\x00\x00" + bytes(4000)
    assert_problem(
        await client.post(
            "/api/v1/files", headers=owner, files=upload(binary, "cat.png", "image/png")
        ),
        415,
    )
    assert stored_objects(settings) == []
    assert (await client.get("/api/v1/files", headers=owner)).json()["total"] == 0
    assert (await trail(client, owner, target_type="file"))["items"] == []


async def test_a_tiny_image_is_422_naming_the_sizes(client: Client) -> None:
    owner = await owner_session(client, "acme")
    problem = assert_problem(
        await client.post("/api/v1/files", headers=owner, files=upload(png(50, 80))), 422
    )
    assert "50x80" in str(problem["detail"])
    assert "100x100" in str(problem["detail"])


async def test_too_large_is_413_mid_stream_with_nothing_behind(
    settings: Settings, clean_state: None
) -> None:
    small = msgspec.structs.replace(settings, upload_max_bytes=10_000)
    async with AsyncTestClient(app=bootstrap.create_app(small)) as client:
        owner = await owner_session(client, "acme")
        response = await client.post(
            "/api/v1/files", headers=owner, files=upload(b"x" * 50_000, "big.txt", "text/plain")
        )
        problem = assert_problem(response, 413)
        assert "10000 bytes" in str(problem["detail"])
        assert stored_objects(small) == []
        usage = (await client.get("/api/v1/files/usage", headers=owner)).json()
        assert usage == {"bytes": 0, "files": 0, "quota_bytes": small.tenant_quota_bytes}
        assert (await trail(client, owner, target_type="file"))["items"] == []


async def test_each_app_builds_its_use_cases_from_its_own_container(
    settings: Settings, clean_state: None, tmp_path: Path
) -> None:
    """Every app of a process shares the use cases' providers (bootstrap/providers.py); a
    request still gets its own app's ports: two apps at once, each storing where its settings
    say."""
    other = msgspec.structs.replace(
        settings, files_dir=str(tmp_path / "other"), s3_bucket=f"test-{uuid.uuid4().hex[:12]}"
    )
    async with (
        AsyncTestClient(app=bootstrap.create_app(settings)) as first,
        AsyncTestClient(app=bootstrap.create_app(other)) as second,
    ):
        owner = await owner_session(first, "acme")
        for client, name in ((first, "a.txt"), (second, "b.txt"), (first, "c.txt")):
            created = await client.post(
                "/api/v1/files", headers=owner, files=upload(b"hello\n", name, "text/plain")
            )
            assert created.status_code == 201, created.text
    assert len(stored_objects(settings)) == 2
    assert len(stored_objects(other)) == 1


async def test_an_upload_with_a_revoked_session_or_changed_roles_is_401_leaving_nothing(
    settings: Settings, clean_state: None, database_owner: asyncpg.Connection
) -> None:
    """An upload's credentials are confirmed by its first transaction, not before its body:
    a small upload (held nothing ahead) after its bytes were stored, a large one before any
    were. Either way a token whose session ended, or whose roles changed, is 401 and leaves no
    row, object, hold or event."""
    async with AsyncTestClient(app=bootstrap.create_app(settings)) as client:
        owner = await owner_session(client, "acme")
        tokens = await login(client, "acme", "olive")
        small, large = b"s" * 5_000, b"l" * (2 * 1024 * 1024)
        logout = {"refresh_token": tokens["refresh_token"]}
        assert (await client.post("/api/v1/auth/logout", json=logout)).status_code == 204
        member = await add_user(client, owner, "mia", ["member"], "acme")
        await database_owner.execute("update users set roles = '{admin}' where username = 'mia'")
        for headers in (bearer(tokens), member):
            for data in (small, large):
                response = await client.post(
                    "/api/v1/files", headers=headers, files=upload(data, "a.txt", "text/plain")
                )
                assert_problem(response, 401)
                assert response.headers["www-authenticate"] == 'Bearer realm="tenantry"'
        assert stored_objects(settings) == []
        usage = (await client.get("/api/v1/files/usage", headers=owner)).json()
        assert usage == {"bytes": 0, "files": 0, "quota_bytes": settings.tenant_quota_bytes}
        assert await database_owner.fetchval("select count(*) from file_reservations") == 0
        assert (await trail(client, owner, target_type="file"))["items"] == []
        # The same upload with a live session and its roles as issued is stored.
        response = await client.post(
            "/api/v1/files", headers=owner, files=upload(small, "a.txt", "text/plain")
        )
        assert response.status_code == 201, response.text


async def test_parallel_uploads_cannot_both_slip_under_the_quota(
    settings: Settings, clean_state: None
) -> None:
    tight = msgspec.structs.replace(settings, tenant_quota_bytes=3_000)
    async with AsyncTestClient(app=bootstrap.create_app(tight)) as client:
        owner = await owner_session(client, "acme")
        responses = await asyncio.gather(
            *(
                client.post(
                    "/api/v1/files",
                    headers=owner,
                    files=upload(b"y" * 1_000, f"{i}.txt", "text/plain"),
                )
                for i in range(6)
            )
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [201, 201, 201, 413, 413, 413]
        usage = (await client.get("/api/v1/files/usage", headers=owner)).json()
        assert usage == {"bytes": 3_000, "files": 3, "quota_bytes": 3_000}
        assert len(stored_objects(tight)) == 3
        # The refused ones left no event.
        uploaded = (await trail(client, owner, action="file.uploaded"))["items"]
        assert len(uploaded) == 3


async def test_another_tenants_file_is_404(client: Client) -> None:
    acme = await owner_session(client, "acme")
    globex = await owner_session(client, "globex")
    file_id = (
        await client.post("/api/v1/files", headers=acme, files=upload(png(200, 200)))
    ).json()["id"]
    for path in (f"/api/v1/files/{file_id}", f"/api/v1/files/{file_id}/content"):
        assert_problem(await client.get(path, headers=globex), 404)
    assert_problem(await client.delete(f"/api/v1/files/{file_id}", headers=globex), 404)
    assert (await client.get("/api/v1/files", headers=globex)).json()["total"] == 0
    assert (await client.get(f"/api/v1/files/{file_id}", headers=acme)).status_code == 200


async def test_delete_is_soft_and_only_admins_list_deleted(client: Client) -> None:
    owner = await owner_session(client, "acme")
    member = await add_user(client, owner, "mia", ["member"], "acme")
    file_id = (
        await client.post(
            "/api/v1/files", headers=member, files=upload(b"plain text", "a.txt", "text/plain")
        )
    ).json()["id"]
    assert (await client.delete(f"/api/v1/files/{file_id}", headers=member)).status_code == 204
    assert_problem(await client.get(f"/api/v1/files/{file_id}", headers=member), 404)
    assert (await client.get("/api/v1/files", headers=member)).json()["total"] == 0
    assert_problem(
        await client.get("/api/v1/files", headers=member, params={"include_deleted": True}), 403
    )
    listed = (
        await client.get("/api/v1/files", headers=owner, params={"include_deleted": True})
    ).json()
    assert [f["id"] for f in listed["items"]] == [file_id]
    assert listed["items"][0]["deleted_at"] is not None
    me = (await client.get("/api/v1/auth/me", headers=member)).json()
    events = (await trail(client, owner))["items"]
    files = [e for e in events if e["target_type"] == "file"]
    assert [(e["action"], e["actor_type"], e["actor_id"], e["target_id"]) for e in files] == [
        ("file.deleted", "user", me["id"], file_id),
        ("file.uploaded", "user", me["id"], file_id),
    ]
    assert files[1]["changes"] == {
        "after": {
            "original_filename": "a.txt",
            "size": 10,
            "content_type": "text/plain",
            "sha256": hashlib.sha256(b"plain text").hexdigest(),
        }
    }
    # Never the bytes, nor where they are stored.
    assert "plain text" not in str(files)
    assert "tenants/" not in str(files)


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("application/json", b"{}", 415),
        ("multipart/form-data", b"--x\r\n", 415),
        ("multipart/form-data; boundary=xyz", b"garbage", 400),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="other"\r\n\r\nv\r\n--xyz--\r\n',
            400,
        ),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="e.txt"\r\n\r\n\r\n--xyz--\r\n',
            422,
        ),
        # A part's headers that are not UTF-8 (a filename in another encoding).
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="\xff.txt"\r\n\r\n'
            b"v\r\n--xyz--\r\n",
            400,
        ),
    ],
)
async def test_malformed_uploads_are_4xx(
    client: Client, content_type: str, body: bytes, status: int
) -> None:
    owner = await owner_session(client, "acme")
    response = await client.post(
        "/api/v1/files", headers={**owner, "Content-Type": content_type}, content=body
    )
    problem = assert_problem(response, status)
    # Said in words, not as the parser's exception.
    assert "Error" not in str(problem["detail"])


async def test_a_multipart_upload_across_parts_round_trips(
    client: Client, settings: Settings
) -> None:
    owner = await owner_session(client, "acme")
    data = png(300, 300, body=12 * 1024 * 1024)  # three S3 parts of 5 MiB
    created = await client.post("/api/v1/files", headers=owner, files=upload(data))
    assert created.status_code == 201, created.text
    assert created.json()["sha256"] == hashlib.sha256(data).hexdigest()
    content = await client.get(f"/api/v1/files/{created.json()['id']}/content", headers=owner)
    assert content.content == data
    assert len(stored_objects(settings)) == 1


async def test_the_store_keeps_the_bytes_however_they_came(
    settings: Settings, clean_state: None
) -> None:
    """Chunks smaller and larger than local disk's write block and S3's part, cut anywhere,
    and more of them than one writev takes."""
    sizes = [1, 70_000, 1024 * 1024 - 1, 3, 5 * 1024 * 1024 + 7, 0, 333, *[7] * 1500, 2]
    data = os.urandom(sum(sizes))
    container = bootstrap.Container(settings)
    await container.start()

    async def cut() -> AsyncIterator[bytes]:
        start = 0
        for size in sizes:
            yield data[start : start + size]
            start += size

    key = f"tenants/{uuid.uuid4()}/files/{uuid.uuid4()}"
    try:
        await container.storage.put(key, cut())
        assert b"".join([chunk async for chunk in container.storage.get(key)]) == data
        await container.storage.delete(key)
    finally:
        await container.close()


def test_a_short_write_goes_on_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel may write less than asked (a disk filling up): the rest follows."""
    writev = os.writev

    def at_most_five_bytes(descriptor: int, buffers: list[bytes]) -> int:
        return writev(descriptor, [memoryview(buffers[0])[:5]])

    monkeypatch.setattr(local.os, "writev", at_most_five_bytes)
    block = [b"first chunk", b"", b"second", b"x" * 23]
    target, opened = tmp_path / "object", []
    local._write(target, opened, block)
    os.close(opened.pop())
    assert target.read_bytes() == b"".join(block)


async def test_a_client_gone_mid_upload_leaves_nothing_and_is_no_server_error(
    settings: Settings, clean_state: None, database_owner: asyncpg.Connection
) -> None:
    """A client whose connection drops mid-body (a phone losing its network) is the client's
    doing, not a fault of the server's: its upload leaves no object, hold or row, and it is
    logged and counted as a client error, never as an unhandled 500."""
    async with live_server(settings) as (client, lines, port):
        owner = await owner_session(client, "acme")
        part = (
            b'--cut\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\n"
        )
        # Declared larger than an upload that holds nothing ahead: its hold is taken first.
        head = (
            "POST /api/v1/files HTTP/1.1\r\nHost: tenantry\r\n"
            f"Authorization: {owner['Authorization']}\r\n"
            "Content-Type: multipart/form-data; boundary=cut\r\n"
            f"Content-Length: {4 * 1024 * 1024}\r\n"
        )
        await cut_off(port, head, part + b"x" * 600_000)
        for _ in until_found(lines, request_id=CUT_OFF, message="request"):
            await asyncio.sleep(0.02)
        usage = (await client.get("/api/v1/files/usage", headers=owner)).json()
    assert_a_client_error(lines)
    assert usage == {"bytes": 0, "files": 0, "quota_bytes": settings.tenant_quota_bytes}
    assert stored_objects(settings) == []
    assert await database_owner.fetchval("select count(*) from file_reservations") == 0


@contextlib.asynccontextmanager
async def live_server(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, LogLines, int]]:
    """The app served by a real uvicorn on a port of its own, a client of it, its log lines."""
    port = free_port()
    config = uvicorn.Config(
        bootstrap.create_app(settings), host="127.0.0.1", port=port, log_config=None
    )
    with captured_logs() as lines:
        async with (
            uvicorn_serving(config),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as client,
        ):
            yield client, lines, port


async def cut_off(port: int, head: str, body: bytes) -> None:
    """Send a request's ``head`` (its request line and headers) and the first ``body`` bytes of
    its body, then drop the connection."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{head}X-Request-Id: {CUT_OFF}\r\n\r\n".encode() + body)
    await writer.drain()
    writer.transport.abort()


# The request id of each request cut_off sends.
CUT_OFF = "cut-off"


def assert_a_client_error(lines: LogLines) -> None:
    """The request cut_off sent was logged as a client's 400 that went away, nothing as an
    error."""
    [access] = [
        line
        for line in lines.all()
        if line.get("request_id") == CUT_OFF and line["message"] == "request"
    ]
    assert access["status"] == 400
    assert [line for line in lines.all() if line["level"] in ("error", "critical")] == []
    assert any(line.get("message") == "client disconnected" for line in lines.all())


def until_found(lines: LogLines, **fields: object) -> Iterator[None]:
    """Yield until a log line with these fields is written (20 s at most)."""
    deadline = time.monotonic() + 20
    while not any(fields.items() <= line.items() for line in lines.all()):
        assert time.monotonic() < deadline, f"no log line with {fields}"
        yield


@pytest.mark.parametrize("settings", ["local"], indirect=True)
async def test_a_full_disk_is_507_leaving_nothing(
    settings: Settings, clean_state: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's disk fills up while an upload is written (as the kernel says it, ENOSPC):
    the client learns so, the operator's log says so, and nothing of it is kept or charged;
    once there is room again the same upload succeeds."""
    writev, full = os.writev, threading.Event()

    def on_a_disk(descriptor: int, buffers: list[bytes]) -> int:
        if full.is_set():
            # What the kernel does once a write has written what room there was.
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return writev(descriptor, buffers)

    monkeypatch.setattr(local.os, "writev", on_a_disk)
    app = bootstrap.create_app(settings)
    async with AsyncTestClient(app=app) as client:
        owner = await owner_session(client, "acme")
        full.set()
        with captured_logs() as lines:
            refused = await client.post(
                "/api/v1/files", headers=owner, files=upload(b"x" * 300_000, "a.txt", "text/plain")
            )
        problem = assert_problem(refused, 507)
        assert problem["detail"] == StorageFull().detail
        assert settings.data_dir not in refused.text
        assert "Errno" not in refused.text
        [logged] = [line for line in lines.all() if line.get("message") == "file store full"]
        assert "No space left on device" in logged["error"]
        assert logged["level"] == "error"
        assert stored_objects(settings) == []
        usage = (await client.get("/api/v1/files/usage", headers=owner)).json()
        assert usage == {"bytes": 0, "files": 0, "quota_bytes": settings.tenant_quota_bytes}
        assert (await trail(client, owner, target_type="file"))["items"] == []

        full.clear()
        again = await client.post(
            "/api/v1/files", headers=owner, files=upload(b"x" * 300_000, "a.txt", "text/plain")
        )
        assert again.status_code == 201, again.text
        assert len(stored_objects(settings)) == 1


async def test_a_cancelled_upload_waits_for_its_write_then_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its descriptor is closed after the write that uses it returns, not under it."""
    writing, release, descriptors = threading.Event(), threading.Event(), []
    writev = os.writev

    def held_writev(descriptor: int, buffers: list[bytes]) -> int:
        descriptors.append(descriptor)
        writing.set()
        release.wait(10)
        return writev(descriptor, buffers)

    monkeypatch.setattr(local.os, "writev", held_writev)
    storage = local.LocalDiskStorage(tmp_path)

    async def two_blocks() -> AsyncIterator[bytes]:
        yield b"x" * local.WRITE_BLOCK
        yield b"y"

    upload = asyncio.create_task(storage.put("tenants/t/files/f", two_blocks()))
    await asyncio.to_thread(writing.wait, 10)
    upload.cancel()
    await asyncio.sleep(0.05)
    assert not upload.done()  # still waiting for the write
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await upload
    assert ".part" not in open_file(descriptors[0])
    assert files_under(tmp_path) == []


def open_file(descriptor: int) -> str:
    """What this process's descriptor is open on ("" when closed and not reused)."""
    try:
        return os.readlink(f"/proc/self/fd/{descriptor}")
    except FileNotFoundError:
        return ""


def files_under(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()]


async def test_a_file_gone_while_the_store_walks_is_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Removed by an erasure, or renamed into place by a finishing upload, between the walk
    finding it and reading its time."""
    storage = local.LocalDiskStorage(tmp_path)
    tenant = f"tenants/{uuid.uuid4()}/files"
    kept, gone = f"{tenant}/{uuid.uuid4()}", f"{tenant}/{uuid.uuid4()}"
    for name in (kept, gone, f"{tenant}/.{uuid.uuid4()}.0a1b{local.UNFINISHED}"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    stat, looked_at = Path.stat, Counter[str]()

    def vanishing(path: Path, **options: bool) -> os.stat_result:
        # The object goes after its first look, the unfinished write before its first.
        looked_at[path.name] += 1
        if path.name.endswith(local.UNFINISHED) or (
            path.name == Path(gone).name and looked_at[path.name] > 1
        ):
            path.unlink(missing_ok=True)
        return stat(path, **options)

    monkeypatch.setattr(Path, "stat", vanishing)
    assert kept in [key async for key, _ in storage.objects("tenants/")]
    assert await storage.discard_unfinished(datetime.now(UTC)) == 0


async def test_presigned_downloads_redirect_to_the_object(
    settings: Settings, clean_state: None
) -> None:
    presigned = msgspec.structs.replace(settings, s3_presign_seconds=60)
    async with AsyncTestClient(app=bootstrap.create_app(presigned)) as client:
        owner = await owner_session(client, "acme")
        data = png(200, 200)
        file_id = (await client.post("/api/v1/files", headers=owner, files=upload(data))).json()[
            "id"
        ]
        response = await client.get(
            f"/api/v1/files/{file_id}/content", headers=owner, follow_redirects=False
        )
        if settings.storage_backend == "local":
            assert response.status_code == 200  # local disk has no URL of its own: it streams
            assert response.content == data
            return
        assert response.status_code == 307
        location = response.headers["location"]
        assert file_id in location
        assert "Signature" in location or "X-Amz-Signature" in location
        async with httpx.AsyncClient() as outside:
            assert (await outside.get(location)).content == data
        ranged = await client.get(
            f"/api/v1/files/{file_id}/content", headers={**owner, "Range": "bytes=0-3"}
        )
        assert ranged.status_code == 206


def leave_unfinished_write(settings: Settings, key: str) -> None:
    """What an upload killed mid-write leaves: a temporary file, or a multipart upload."""
    if settings.storage_backend == "s3":
        client = s3_client(settings)
        started = client.create_multipart_upload(Bucket=settings.s3_bucket, Key=key)
        client.upload_part(
            Bucket=settings.s3_bucket,
            Key=key,
            UploadId=started["UploadId"],
            PartNumber=1,
            Body=b"half of it",
        )
        return
    target = Path(settings.files_dir or "") / key
    target.parent.mkdir(parents=True, exist_ok=True)
    target.with_name(f".{target.name}.{uuid.uuid4().hex}{local.UNFINISHED}").write_bytes(b"half")


async def test_sweep_purges_expired_deletions_and_orphans(
    client: Client, settings: Settings, database_url: str
) -> None:
    owner = await owner_session(client, "acme")
    kept = (
        await client.post(
            "/api/v1/files", headers=owner, files=upload(b"keep me", "k.txt", "text/plain")
        )
    ).json()
    gone = (
        await client.post(
            "/api/v1/files", headers=owner, files=upload(b"drop me", "d.txt", "text/plain")
        )
    ).json()
    fresh = (
        await client.post(
            "/api/v1/files", headers=owner, files=upload(b"just deleted", "f.txt", "text/plain")
        )
    ).json()
    for file in (gone, fresh):
        assert (
            await client.delete(f"/api/v1/files/{file['id']}", headers=owner)
        ).status_code == 204
    connection = await asyncpg.connect(plain_url(database_url))
    try:
        await connection.execute(
            "update files set deleted_at = now() - interval '30 days' where id = $1::uuid",
            gone["id"],
        )
    finally:
        await connection.close()

    container = bootstrap.Container(settings)
    await container.start()
    orphan_key = f"tenants/{uuid.uuid4()}/files/{uuid.uuid4()}"

    async def one(data: bytes) -> AsyncIterator[bytes]:
        yield data

    try:
        await container.storage.put(orphan_key, one(b"nobody's"))
        leave_unfinished_write(settings, f"tenants/{uuid.uuid4()}/files/{uuid.uuid4()}")
        async with container.unit_of_work() as uow:
            patient = await SweepFiles(container.files(uow))(
                retention=timedelta(days=7), orphan_age=timedelta(hours=1)
            )
        assert (patient.purged, patient.orphans) == (1, 0)  # the orphan is too young to judge
        async with container.unit_of_work() as uow:
            eager = await SweepFiles(container.files(uow))(
                retention=timedelta(days=7),
                orphan_age=timedelta(0),
                unfinished_age=timedelta(0),
            )
        assert (eager.purged, eager.orphans) == (0, 1)
        # The unfinished write goes once it is old enough to be a dead upload's. (moto dates
        # every multipart upload 2010-11-10: there the first sweep takes it.)
        assert patient.unfinished + eager.unfinished == 1
        assert settings.storage_backend == "s3" or patient.unfinished == 0
    finally:
        await container.close()
        await container.alchemy.get_engine().dispose()

    remaining = stored_objects(settings)
    assert len(remaining) == 2  # the kept file and the recently deleted one
    # One event for the sweep that purged, none for the one that found nothing to purge.
    [purged] = (await trail(client, owner, action="files.purged"))["items"]
    assert (purged["actor_type"], purged["actor_id"], purged["changes"]) == (
        "system",
        None,
        {"count": 1},
    )
    listed = (
        await client.get("/api/v1/files", headers=owner, params={"include_deleted": True})
    ).json()
    assert {f["id"] for f in listed["items"]} == {kept["id"], fresh["id"]}


async def test_an_image_bomb_and_a_cut_image_are_422_and_leave_nothing(
    client: Client, settings: Settings
) -> None:
    owner = await owner_session(client, "acme")
    bomb = png(2_147_483_647, 2_147_483_647, body=0)
    problem = assert_problem(
        await client.post("/api/v1/files", headers=owner, files=upload(bomb)), 422
    )
    assert "2147483647x2147483647" in str(problem["detail"])
    cut = png(300, 200)[:-6]
    problem = assert_problem(
        await client.post("/api/v1/files", headers=owner, files=upload(cut)), 422
    )
    assert "cut short" in str(problem["detail"])
    assert stored_objects(settings) == []
    assert (await client.get("/api/v1/files", headers=owner)).json()["total"] == 0

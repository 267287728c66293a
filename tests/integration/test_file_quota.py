"""A tenant's file quota: held by uploads in one statement each, given back when an upload fails
or dies, never exceeded by uploads racing for it; counters that follow deletes and migrations."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from tenantry import bootstrap
from tenantry.application.audit import record
from tenantry.application.files import SweepFiles
from tenantry.config import Settings, load_settings
from tenantry.domain.files import FileRepository, QuotaRefused
from tenantry.infrastructure.db import migrations
from tenantry.infrastructure.db.database import connect
from tenantry.infrastructure.db.tenancy import TenantSession
from tenantry.infrastructure.db.uow import SqlUnitOfWork

from ..conftest import Client, plain_url
from .identity import create_tenant, owner_session
from .test_auth import serving
from .test_files import png, upload
from .test_health import assert_problem
from .test_migrations import empty_database  # noqa: F401 - a fixture
from .test_tenancy import engine_for

HOUR = timedelta(hours=1)


async def counters(owner: asyncpg.Connection, tenant_id: uuid.UUID) -> tuple[int, int, int, int]:
    """Used bytes, files and held bytes of the tenant's usage row, and its holds' count."""
    row = await owner.fetchrow(
        "select used_bytes, file_count, reserved_bytes from file_usage where tenant_id = $1",
        tenant_id,
    )
    holds = await owner.fetchval(
        "select count(*) from file_reservations where tenant_id = $1", tenant_id
    )
    return (*tuple(row), holds) if row else (0, 0, 0, holds)


async def tenant_of(client: Client, headers: dict[str, str]) -> uuid.UUID:
    return uuid.UUID((await client.get("/api/v1/auth/me", headers=headers)).json()["tenant_id"])


Units = Callable[[], AbstractAsyncContextManager[tuple[SqlUnitOfWork, FileRepository]]]


@pytest.fixture
async def repositories(client: Client, app_database_url: str) -> AsyncIterator[Units]:
    """Units of work of one tenant, each on a connection of its own (as the app role)."""
    tenant_id = uuid.UUID((await create_tenant(client, "acme"))["tenant"]["id"])
    engine: AsyncEngine = engine_for(app_database_url, pool_size=12)
    sessions = async_sessionmaker(engine, expire_on_commit=False, class_=TenantSession)

    @asynccontextmanager
    async def one() -> AsyncIterator[tuple[SqlUnitOfWork, FileRepository]]:
        async with sessions() as session:
            uow = SqlUnitOfWork(session)
            yield uow, uow.repository(FileRepository, tenant_id)

    yield one
    await engine.dispose()


async def hold(units: Units, file_id: uuid.UUID, size: int, *, quota: int) -> bool:
    async with units() as (uow, files):
        taken = await files.reserve(
            file_id, size, default_quota=quota, expires_at=datetime.now(UTC) + HOUR
        )
        await uow.commit()
        return taken


async def test_racing_holds_never_pass_the_quota(
    repositories: Units,
    database_owner: asyncpg.Connection,
) -> None:
    taken = await asyncio.gather(
        *(hold(repositories, uuid.uuid4(), 300, quota=1_000) for _ in range(10))
    )
    assert sorted(taken) == [False] * 7 + [True] * 3
    tenant_id = await database_owner.fetchval("select tenant_id from file_usage")
    assert await counters(database_owner, tenant_id) == (0, 0, 900, 3)


async def test_a_finish_past_an_expired_hold_checks_the_quota(
    repositories: Units,
    database_owner: asyncpg.Connection,
) -> None:
    late, other = uuid.uuid4(), uuid.uuid4()
    assert await hold(repositories, late, 800, quota=1_000)
    async with repositories() as (uow, files):
        # The late upload's hold is taken for a dead one's and given back.
        assert await files.release_expired(datetime.now(UTC) + 2 * HOUR) == 800
        await uow.commit()
    assert await hold(repositories, other, 800, quota=1_000)
    async with repositories() as (uow, files):
        tenant_id = files.tenant_id  # type: ignore[attr-defined]
        values = {
            "id": late,
            "original_filename": "late.txt",
            "size": 800,
            "content_type": "text/plain",
            "sha256": "0" * 64,
            "metadata": {},
            "storage_key": f"tenants/{tenant_id}/files/{late}",
            "created_at": datetime.now(UTC),
        }
        await files.add_reserved(default_quota=1_000, **values)
        # Refused by the commit that writes it: nothing of the unit of work is written.
        with pytest.raises(QuotaRefused):
            await uow.commit()
    assert await counters(database_owner, tenant_id) == (0, 0, 800, 1)
    async with repositories() as (uow, files):
        # Within what it holds, a finish passes even when the quota was lowered meanwhile.
        stored = await files.add_reserved(default_quota=1, **{**values, "id": other, "size": 500})
        assert stored.size == 500
        await uow.commit()
    assert await counters(database_owner, tenant_id) == (500, 1, 0, 0)


async def test_failed_uploads_give_their_hold_back(
    client: Client, database_owner: asyncpg.Connection
) -> None:
    owner = await owner_session(client, "acme")
    tenant_id = await tenant_of(client, owner)
    binary = b"MZ\x90\x00" + bytes(4000)
    assert_problem(await client.post("/api/v1/files", headers=owner, files=upload(binary)), 415)
    cut = png(300, 200)[:-6]
    assert_problem(await client.post("/api/v1/files", headers=owner, files=upload(cut)), 422)
    assert await counters(database_owner, tenant_id) == (0, 0, 0, 0)
    kept = await client.post("/api/v1/files", headers=owner, files=upload(png(300, 200)))
    assert kept.status_code == 201
    assert await counters(database_owner, tenant_id) == (kept.json()["size"], 1, 0, 0)


async def test_the_hold_of_a_dead_upload_comes_back(
    settings: Settings, clean_state: None, database_owner: asyncpg.Connection
) -> None:
    """A process killed mid-upload leaves its hold behind. Once expired, the tenant's next
    upload that would not fit otherwise takes it back; the sweep does too."""
    tight = msgspec.structs.replace(settings, tenant_quota_bytes=3_000)
    async with AsyncTestClient(app=bootstrap.create_app(tight)) as client:
        owner = await owner_session(client, "acme")
        tenant_id = await tenant_of(client, owner)
        first = await client.post("/api/v1/files", headers=owner, files=upload(b"a" * 500, "a"))
        assert first.status_code == 201

        async def dead_upload(size: int, expires_in: timedelta) -> None:
            await database_owner.execute(
                "insert into file_reservations (tenant_id, id, bytes, expires_at, created_at, "
                "updated_at) values ($1, $2, $3, now() + $4, now(), now())",
                tenant_id,
                uuid.uuid4(),
                size,
                expires_in,
            )
            await database_owner.execute(
                "update file_usage set reserved_bytes = reserved_bytes + $2 where tenant_id = $1",
                tenant_id,
                size,
            )

        await dead_upload(2_000, -timedelta(minutes=1))
        await dead_upload(400, timedelta(minutes=10))  # not expired: still held
        assert await counters(database_owner, tenant_id) == (500, 1, 2_400, 2)
        second = await client.post("/api/v1/files", headers=owner, files=upload(b"b" * 1_500))
        assert second.status_code == 201, second.text
        assert await counters(database_owner, tenant_id) == (2_000, 2, 400, 1)
        problem = assert_problem(
            await client.post("/api/v1/files", headers=owner, files=upload(b"c" * 700)), 413
        )
        assert "quota of 3000 bytes" in str(problem["detail"])

        await database_owner.execute(
            "update file_reservations set expires_at = now() - $1::interval", HOUR
        )
        container = bootstrap.Container(tight)
        await container.start()
        try:
            async with container.unit_of_work() as uow:
                await SweepFiles(container.files(uow))(retention=HOUR, orphan_age=HOUR)
        finally:
            await container.close()
            await container.alchemy.get_engine().dispose()
        assert await counters(database_owner, tenant_id) == (2_000, 2, 0, 0)


async def test_deleting_a_file_gives_its_bytes_back(
    settings: Settings, clean_state: None, database_owner: asyncpg.Connection
) -> None:
    tight = msgspec.structs.replace(settings, tenant_quota_bytes=1_000)
    async with AsyncTestClient(app=bootstrap.create_app(tight)) as client:
        owner = await owner_session(client, "acme")
        tenant_id = await tenant_of(client, owner)
        first = await client.post("/api/v1/files", headers=owner, files=upload(b"a" * 1_000))
        assert first.status_code == 201
        assert_problem(
            await client.post("/api/v1/files", headers=owner, files=upload(b"b" * 10)), 413
        )
        deleted = await client.delete(f"/api/v1/files/{first.json()['id']}", headers=owner)
        assert deleted.status_code == 204
        assert await counters(database_owner, tenant_id) == (0, 0, 0, 0)
        again = await client.post("/api/v1/files", headers=owner, files=upload(b"c" * 1_000))
        assert again.status_code == 201
        usage = (await client.get("/api/v1/files/usage", headers=owner)).json()
        assert usage == {"bytes": 1_000, "files": 1, "quota_bytes": 1_000}


async def test_the_counters_are_filled_from_existing_files(empty_database: str) -> None:  # noqa: F811 - the fixture
    await asyncio.to_thread(migrations.upgrade, empty_database, "0009_task_sweeps")
    connection = await asyncpg.connect(plain_url(empty_database))
    tenants = [uuid.uuid4() for _ in range(3)]
    try:
        for number, tenant in enumerate(tenants):
            await connection.execute(
                "insert into tenants (id, name, slug, created_at, updated_at) "
                "values ($1, $2, $2, now(), now())",
                tenant,
                f"t{number}",
            )
        for tenant, size, deleted in (
            (tenants[0], 100, False),
            (tenants[0], 250, False),
            (tenants[0], 4_000, True),
            (tenants[1], 7, False),
        ):
            file_id = uuid.uuid4()
            await connection.execute(
                "insert into files (tenant_id, id, original_filename, size, content_type, "
                "sha256, storage_key, deleted_at, created_at, updated_at) values "
                "($1, $2, 'f', $3, 'text/plain', '', 'k', "
                "case when $4 then now() end, now(), now())",
                tenant,
                file_id,
                size,
                deleted,
            )
    finally:
        await connection.close()
    await asyncio.to_thread(migrations.upgrade, empty_database)
    connection = await asyncpg.connect(plain_url(empty_database))
    try:
        found = {
            row["tenant_id"]: tuple(row)[1:]
            for row in await connection.fetch(
                "select tenant_id, used_bytes, file_count, reserved_bytes from file_usage "
                "where id = tenant_id"
            )
        }
        assert found == {tenants[0]: (350, 2, 0), tenants[1]: (7, 1, 0), tenants[2]: (0, 0, 0)}
    finally:
        await connection.close()
    await asyncio.to_thread(migrations.downgrade, empty_database, "0009_task_sweeps")


async def test_a_tenants_own_quota_setting_counts(
    client: Client, database_owner: asyncpg.Connection, settings: Settings
) -> None:
    owner = await owner_session(client, "acme")
    tenant_id = await tenant_of(client, owner)
    await database_owner.execute(
        "update tenants set settings = jsonb_build_object('quota_bytes', 1500) where id = $1",
        tenant_id,
    )
    assert (
        await client.post("/api/v1/files", headers=owner, files=upload(b"a" * 1_000))
    ).is_success
    problem = assert_problem(
        await client.post("/api/v1/files", headers=owner, files=upload(b"b" * 1_000)), 413
    )
    assert "quota of 1500 bytes is exhausted (1000 bytes used)" in str(problem["detail"])
    usage = (await client.get("/api/v1/files/usage", headers=owner)).json()
    assert usage == {"bytes": 1_000, "files": 1, "quota_bytes": 1_500}
    # Not a whole number of bytes: the default quota holds.
    await database_owner.execute(
        'update tenants set settings = \'{"quota_bytes": "1500"}\' where id = $1', tenant_id
    )
    usage = (await client.get("/api/v1/files/usage", headers=owner)).json()
    assert usage["quota_bytes"] == settings.tenant_quota_bytes
    # The statements that check the quota read the setting alike: the default lets these in.
    for setting in ('"1"', "1.5", "-1", "true"):
        await database_owner.execute(
            f"update tenants set settings = '{{\"quota_bytes\": {setting}}}' where id = $1",
            tenant_id,
        )
        sent = await client.post("/api/v1/files", headers=owner, files=upload(b"c" * 1_000))
        assert sent.status_code == 201, (setting, sent.text)


async def test_an_upload_of_no_declared_length_is_held_as_it_streams(
    settings: Settings, clean_state: None, database_owner: asyncpg.Connection
) -> None:
    """Chunked: no Content-Length, so the bytes are held step by step, and refused mid-stream
    once past the quota, the hold given back."""
    tight = msgspec.structs.replace(settings, tenant_quota_bytes=3_000)
    boundary = "b" + uuid.uuid4().hex

    def chunked(data: bytes) -> AsyncIterator[bytes]:
        # A generator: httpx sends it chunked, with no Content-Length.
        async def body() -> AsyncIterator[bytes]:
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                'filename="c.txt"\r\nContent-Type: text/plain\r\n\r\n'
            ).encode()
            for start in range(0, len(data), 500):
                yield data[start : start + 500]
            yield f"\r\n--{boundary}--\r\n".encode()

        return body()

    # A real server: the test client sends no body it has not read whole.
    async with serving(tight) as client:
        owner = await owner_session(client, "acme")
        tenant_id = await tenant_of(client, owner)
        headers = {**owner, "Content-Type": f"multipart/form-data; boundary={boundary}"}
        refused = await client.post("/api/v1/files", headers=headers, content=chunked(b"x" * 5_000))
        assert "quota of 3000 bytes" in str(assert_problem(refused, 413)["detail"])
        assert await counters(database_owner, tenant_id) == (0, 0, 0, 0)
        kept = await client.post("/api/v1/files", headers=headers, content=chunked(b"y" * 2_000))
        assert kept.status_code == 201, kept.text
        assert await counters(database_owner, tenant_id) == (2_000, 1, 0, 0)


async def test_an_uploads_row_its_event_and_its_outbox_row_are_one_round_trip(
    client: Client, app_database_url: str, database_owner: asyncpg.Connection
) -> None:
    """On a connection made as the app makes them, an upload's unit of work (nothing read
    before its commit) sends BEGIN, the tenant, the row, its audit event, its webhook outbox
    row and COMMIT as one message (migration 0025_add_file); refused, it writes none of them,
    keeps the upload's hold, and the connection goes back to the pool out of its transaction."""
    tenant_id = uuid.UUID((await create_tenant(client, "acme"))["tenant"]["id"])
    async_url = load_settings(environ={}, env_file=None, database_url=app_database_url)
    engine = create_async_engine(
        async_url.async_database_url, pool_size=1, connect_args={"async_creator_fn": connect}
    )
    sessions = async_sessionmaker(engine, expire_on_commit=False, class_=TenantSession)
    sent: list[str] = []
    async with engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        driver.add_query_logger(lambda query: sent.append(query.query))

    async def uploaded(file_id: uuid.UUID, size: int, *, quota: int) -> None:
        async with sessions() as session:
            uow = SqlUnitOfWork(session)
            stored = await uow.repository(FileRepository, tenant_id).add_reserved(
                default_quota=quota,
                id=file_id,
                original_filename="a.txt",
                size=size,
                content_type="text/plain",
                sha256="0" * 64,
                metadata={"lines": 1},
                storage_key=f"tenants/{tenant_id}/files/{file_id}",
                created_at=datetime.now(UTC),
            )
            await record(
                uow,
                None,
                "file.uploaded",
                ("file", stored.id),
                tenant_id=tenant_id,
                changes={"after": {"size": size}},
            )
            await uow.commit()

    try:
        first = uuid.uuid4()
        sent.clear()
        await uploaded(first, 600, quota=1_000)
        assert len(sent) == 1
        assert sent[0].startswith("BEGIN; SET LOCAL app.tenant_id")
        assert "tenantry_add_file(" in sent[0]
        assert 'INSERT INTO "audit_events"' in sent[0]
        assert "tenantry_publish_webhook_event(" in sent[0]
        assert sent[0].endswith("; COMMIT")
        row = await database_owner.fetchrow("select size, metadata from files where id = $1", first)
        assert (row["size"], msgspec.json.decode(row["metadata"])) == (600, {"lines": 1})
        assert await counters(database_owner, tenant_id) == (600, 1, 0, 0)

        second = uuid.uuid4()
        async with sessions() as session:
            uow = SqlUnitOfWork(session)
            assert await uow.repository(FileRepository, tenant_id).reserve(
                second, 300, default_quota=1_000, expires_at=datetime.now(UTC) + HOUR
            )
            await uow.commit()
        sent.clear()
        # Past its hold of 300 and the quota: refused whole.
        with pytest.raises(QuotaRefused):
            await uploaded(second, 500, quota=1_000)
        assert sent[-1] == "ROLLBACK"
        assert await counters(database_owner, tenant_id) == (600, 1, 300, 1)
        events = "select count(*) from audit_events where target_id = $1"
        assert await database_owner.fetchval(events, second) == 0
        # Within it: written.
        await uploaded(second, 300, quota=1_000)
        assert await counters(database_owner, tenant_id) == (900, 2, 0, 0)
        assert await database_owner.fetchval(events, second) == 1
    finally:
        await engine.dispose()

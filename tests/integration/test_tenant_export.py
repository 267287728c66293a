"""Tenant export end to end: the API starts it, a real worker writes the archive on local disk
and on S3 (moto), the owner downloads it, and every row and file of the tenant, and nothing of
the other tenant or of any secret column, is found in it. The tables come from the catalog and
are filled by test_rls's Seeder, so a table added later is exported and checked here too."""

from __future__ import annotations

import hashlib
import io
import json
import tracemalloc
import uuid
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncConnection

from tenantry import bootstrap
from tenantry.application.files import UploadFile
from tenantry.application.tasks import TaskContext
from tenantry.application.tasks.handlers.tenant_export import TenantExport, TenantExportConfig
from tenantry.application.tenant_export import RequestTenantExport
from tenantry.config import Settings
from tenantry.domain.auth import Actor
from tenantry.domain.tasks import TaskRepository
from tenantry.domain.tenant_export import (
    NOT_SECRET_COLUMNS,
    SECRET_COLUMNS,
    TENANTS,
    looks_secret,
)
from tenantry.domain.users import Role
from tenantry.infrastructure.db.catalog import tenant_tables

from ..conftest import Client
from .identity import add_user, bearer, create_tenant, login, owner_session
from .test_audit import trail
from .test_catalog import app_connection  # noqa: F401 - a fixture
from .test_files import on_storage, png, upload
from .test_health import assert_problem
from .test_rls import Seeder
from .test_rls import tenant_tables as tenant_table_names
from .test_tasks import task_settings, wait_for

TENANT_COLUMNS = """
    select array(select attname from pg_attribute
                 where attrelid = 'public.tenants'::regclass and attnum > 0 and not attisdropped)
"""
MiB = 1024 * 1024


class SeederOfExistingTenants(Seeder):
    """test_rls's Seeder, filling every tenant table for tenants made through the API."""

    async def insert(self, table: str, values: Any) -> asyncpg.Record:
        if table == TENANTS:
            row: asyncpg.Record = await self.connection.fetchrow(
                "select * from tenants where id = $1", values["id"]
            )
            return row
        return await super().insert(table, values)


@pytest.fixture(params=["local", "s3"])
def storage_settings(settings: Settings, s3_url: str, request: pytest.FixtureRequest) -> Settings:
    return on_storage(settings, request.param, s3_url)


@pytest.fixture
async def worker_client(storage_settings: Settings, clean_state: None) -> AsyncIterator[Client]:
    app = bootstrap.create_app(task_settings(storage_settings), with_worker=True)
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


async def seed_every_table(owner: asyncpg.Connection, tenants: list[uuid.UUID]) -> None:
    """A row in every tenant table for each tenant. Its file rows are deleted ones (no bytes
    behind them) and its tasks finished ones (no worker picks them up)."""
    await SeederOfExistingTenants(owner, await tenant_table_names(owner)).seed(tenants)
    await owner.execute(
        "update files set deleted_at = now() where storage_key not like 'tenants/%'"
    )
    await owner.execute("update tasks set status = 'completed' where status = 'pending'")


async def rows_of(owner: asyncpg.Connection, tenant: uuid.UUID) -> dict[str, set[str]]:
    """The ids of every row of ``tenant``, by table (its tenants row included)."""
    found = {TENANTS: {str(tenant)}}
    for table in await tenant_table_names(owner):
        ids = await owner.fetch(f'select id from "{table}" where tenant_id = $1', tenant)
        found[table] = {str(row["id"]) for row in ids}
    return found


async def secrets_of(owner: asyncpg.Connection) -> set[str]:
    """Every value of every secret column, of every tenant."""
    values = set()
    for table, column in SECRET_COLUMNS:
        query = f'select "{column}" as value from "{table}" where "{column}" is not null'
        values |= {str(row["value"]) for row in await owner.fetch(query)}
    return values


async def export(client: Client, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.post("/api/v1/tenant/export", headers=headers)
    assert response.status_code == 202, response.text
    task: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/api/v1/tasks/{task['id']}"
    assert (task["type"], task["status"]) == ("tenant.export", "pending")
    done = await wait_for(client, headers, task["id"], "completed", "failed")
    assert done["status"] == "completed", done
    return done


async def download(client: Client, headers: dict[str, str], file_id: str) -> zipfile.ZipFile:
    response = await client.get(f"/api/v1/files/{file_id}/content", headers=headers)
    assert response.status_code == 200, response.text
    return zipfile.ZipFile(io.BytesIO(response.content))


async def test_an_export_holds_every_row_and_live_file_of_its_tenant_and_nothing_else(
    worker_client: Client, database_owner: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = worker_client
    # Pages of a few rows and one file: every table and the files take several.
    monkeypatch.setattr(TenantExport, "page", 2)
    monkeypatch.setattr(TenantExport, "files_page", 1)
    owner = await owner_session(client, "acme")
    other = await owner_session(client, "globex")
    uploads = {}
    for headers, name, data in (
        (owner, "notes.txt", b"minutes of the board\n" * 500),
        (owner, "photo.png", png(120, 120)),
        (owner, "gone.txt", b"deleted before the export\n"),
        (other, "theirs.txt", b"the other tenant's file\n"),
    ):
        response = await client.post("/api/v1/files", headers=headers, files=upload(data, name))
        assert response.status_code == 201, response.text
        uploads[name] = (response.json()["id"], data)
    gone = uploads["gone.txt"][0]
    assert (await client.delete(f"/api/v1/files/{gone}", headers=owner)).status_code == 204
    mine = (await client.get("/api/v1/auth/me", headers=owner)).json()["tenant_id"]
    theirs = (await client.get("/api/v1/auth/me", headers=other)).json()["tenant_id"]
    await seed_every_table(database_owner, [uuid.UUID(mine), uuid.UUID(theirs)])
    before = await rows_of(database_owner, uuid.UUID(mine))

    done = await export(client, owner)
    [archive_id] = done["output_files"]
    assert done["result"]["file_id"] == archive_id
    after = await rows_of(database_owner, uuid.UUID(mine))
    others = await rows_of(database_owner, uuid.UUID(theirs))
    secrets = await secrets_of(database_owner)

    with await download(client, owner, archive_id) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert manifest["format_version"] == 1
        assert (manifest["tenant_id"], manifest["tenant_slug"]) == (mine, "acme")
        # Every table, the tenant's own row among them.
        assert set(manifest["tables"]) == set(before)
        names = set(archive.namelist())
        for table, entry in manifest["tables"].items():
            data = archive.read(entry["path"])
            assert entry["path"] == f"tables/{table}.jsonl"
            assert hashlib.sha256(data).hexdigest() == entry["sha256"], table
            rows = [json.loads(line) for line in data.splitlines()]
            assert len(rows) == entry["rows"] == done["result"]["rows"][table], table
            ids = {row["id"] for row in rows}
            if table == TENANTS:
                # JSON columns are nested objects, not JSON text in a string.
                assert isinstance(rows[0]["settings"], dict)
            # Every row there was when it was asked for; rows the export's own task writes
            # meanwhile (its task row, log and events) may be there too.
            assert before[table] <= ids <= after[table], table
            for row in rows:
                assert (row["id"] if table == TENANTS else row["tenant_id"]) == mine, table
                assert not {(table, column) for column in row} & SECRET_COLUMNS, table
            text = data.decode()
            assert not [value for value in secrets if value in text], table
            assert not [i for table_ids in others.values() for i in table_ids if i in text], table
        # Every live file of the tenant, byte for byte; not the deleted one, not the other's.
        live = {uploads[name][0]: uploads[name][1] for name in ("notes.txt", "photo.png")}
        assert {entry["id"] for entry in manifest["files"]} == set(live)
        assert {name for name in names if name.startswith("files/")} == {
            f"files/{file_id}" for file_id in live
        }
        for entry in manifest["files"]:
            data = archive.read(entry["path"])
            assert data == live[entry["id"]]
            assert (entry["size"], entry["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
        assert done["result"]["files"] == 2

    # Asked for by the owner, on the trail with the task it started.
    [requested] = (await trail(client, owner, action="tenant.export_requested"))["items"]
    assert (requested["target_type"], requested["target_id"]) == ("tenant", mine)
    assert requested["changes"] == {"after": {"task_id": done["id"]}}
    # A later export leaves the earlier archive out: each would otherwise hold all before it.
    again = await export(client, owner)
    with await download(client, owner, again["result"]["file_id"]) as archive:
        assert f"files/{archive_id}" not in archive.namelist()
        assert len(json.loads(archive.read("manifest.json"))["files"]) == 2


async def test_only_owners_may_export(client: Client, database_owner: asyncpg.Connection) -> None:
    owner = await owner_session(client, "acme")
    admin = await add_user(client, owner, "ada", ["admin"], "acme")
    member = await add_user(client, owner, "max", ["member"], "acme")
    admin_key = (
        await client.post("/api/v1/auth/api-keys", headers=admin, json={"name": "ci"})
    ).json()["key"]
    for headers in (admin, member, {"X-API-Key": admin_key}):
        response = await client.post("/api/v1/tenant/export", headers=headers)
        assert_problem(response, 403)
    assert_problem(await client.post("/api/v1/tenant/export"), 401)
    # Not through the generic submit either, not even for an owner: 422 naming the endpoint.
    for headers in (owner, member):
        response = await client.post(
            "/api/v1/tasks", headers=headers, json={"type": "tenant.export"}
        )
        assert_problem(response, 422)
        assert "POST /api/v1/tenant/export" in response.text
    assert await database_owner.fetchval("select count(*) from tasks") == 0
    assert (await trail(client, owner, action="tenant.export_requested"))["items"] == []
    # The owner's API key is the owner.
    owner_key = (
        await client.post("/api/v1/auth/api-keys", headers=owner, json={"name": "ci"})
    ).json()["key"]
    response = await client.post("/api/v1/tenant/export", headers={"X-API-Key": owner_key})
    assert response.status_code == 202, response.text


async def test_a_requester_no_longer_owner_when_it_runs_gets_nothing(
    client: Client, settings: Settings
) -> None:
    body = await create_tenant(client, "acme")
    first = bearer(await login(client, "acme", "olive"))
    second = await add_user(client, first, "otto", ["owner"], "acme")
    # Asked for, then demoted before a worker runs it (this client runs none).
    task = (await client.post("/api/v1/tenant/export", headers=second)).json()
    otto = next(
        user
        for user in (await client.get("/api/v1/users", headers=first)).json()["items"]
        if user["username"] == "otto"
    )
    demoted = await client.patch(
        f"/api/v1/users/{otto['id']}", headers=first, json={"roles": ["member"]}
    )
    assert demoted.status_code == 200, demoted.text
    container = bootstrap.Container(settings)
    try:
        context = await task_context(container, uuid.UUID(body["tenant"]["id"]), task["id"])
        with pytest.raises(Exception, match="Only the tenant's owners"):
            await TenantExport().run(context, TenantExportConfig())
    finally:
        await container.close()
        await container.alchemy.get_engine().dispose()


async def task_context(
    container: bootstrap.Container, tenant_id: uuid.UUID, task_id: str
) -> TaskContext:
    async with container.unit_of_work() as uow:
        task = await uow.repository(TaskRepository, tenant_id).get(uuid.UUID(task_id))
    assert task is not None
    return TaskContext(
        task,
        units=container.unit_of_work,
        storage=container.storage,
        clock=container.clock,
        file_policy=container.file_policy,
    )


async def test_every_secret_looking_column_is_excluded_or_allowed(
    app_connection: AsyncConnection,  # noqa: F811 - the fixture
    database_owner: asyncpg.Connection,
) -> None:
    columns = {
        (table.name, column)
        for table in await tenant_tables(app_connection)
        for column in table.columns
    }
    columns |= {(TENANTS, column) for column in await database_owner.fetchval(TENANT_COLUMNS)}
    unjudged = {
        (table, column)
        for table, column in columns
        if looks_secret(column) and (table, column) not in SECRET_COLUMNS | NOT_SECRET_COLUMNS
    }
    assert unjudged == set(), "list each in SECRET_COLUMNS or NOT_SECRET_COLUMNS"
    # Both lists name columns that exist: a renamed secret column is not silently exported.
    assert columns >= SECRET_COLUMNS | NOT_SECRET_COLUMNS


@pytest.mark.parametrize(
    "files", [pytest.param(4, id="64MiB"), pytest.param(16, marks=pytest.mark.slow, id="1GiB")]
)
async def test_memory_stays_flat_whatever_the_files_weigh(
    client: Client, settings: Settings, files: int
) -> None:
    """Peak Python allocations (threads' included) while exporting ``files`` files of 16 MiB
    (64 MiB for the slow 1 GiB run) stay a small fraction of their bytes: streamed, never
    held."""
    size = (16 if files == 4 else 64) * MiB
    body = await create_tenant(client, "acme")
    tenant_id = uuid.UUID(body["tenant"]["id"])
    owner = Actor(user_id=uuid.UUID(body["user"]["id"]), tenant_id=tenant_id, roles=(Role.OWNER,))
    roomy = msgspec.structs.replace(
        settings, tenant_quota_bytes=4 * files * size, upload_max_bytes=size
    )
    container = bootstrap.Container(roomy)
    try:
        block = b"0123456789abcdef" * (MiB // 16)

        async def content() -> AsyncIterator[bytes]:
            for _ in range(size // MiB):
                yield block

        for number in range(files):
            async with container.unit_of_work() as uow:
                await UploadFile(container.files(uow))(
                    owner, filename=f"big-{number}.txt", claimed_type=None, chunks=content()
                )
        async with container.unit_of_work() as uow:
            task = await RequestTenantExport(
                uow, container.job_queue, container.registry, container.task_limits
            )(owner, request_id=None)
        context = await task_context(container, tenant_id, str(task.id))
        tracemalloc.start()
        try:
            result = await TenantExport().run(context, TenantExportConfig())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        await container.close()
        await container.alchemy.get_engine().dispose()
    assert result["file_bytes"] == files * size
    assert result["size"] > files * size
    # An eighth of 64 MiB; the same few MiB (buffers of a chunk or block each) for 1 GiB.
    budget = min(files * size // 8, 8 * MiB)
    assert peak < budget, f"peak {peak / MiB:.1f} MiB for {files * size // MiB} MiB of files"

"""Ids that point across tenants (task inputs, export configs, a document's project), the
platform jobs that walk every tenant, and a suspended tenant's credentials."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from tenantry import bootstrap
from tenantry.application.files import SweepFiles
from tenantry.application.tasks.maintenance import ReapTasks, ReconcileTasks
from tenantry.bootstrap import create_storage
from tenantry.config import Settings
from tenantry.domain.files import OBJECTS_PREFIX, object_key

from ..conftest import Client
from .identity import bearer, create_tenant, login, owner_session
from .test_health import assert_problem

TENANTS = 50
HOUR, DAY, NOW = timedelta(hours=1), timedelta(days=1), timedelta(0)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # A queue of this test alone, whose contents the tests read back.
    return msgspec.structs.replace(settings, task_queue_name=f"test:refs:{uuid.uuid4().hex}")


@pytest.fixture
async def container(settings: Settings) -> AsyncIterator[bootstrap.Container]:
    container = bootstrap.Container(settings)
    await container.start()
    yield container
    await container.close()
    await container.alchemy.get_engine().dispose()


async def upload(client: Client, headers: dict[str, str], data: bytes) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/files", headers=headers, files={"file": ("a.txt", data, "text/plain")}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_task_naming_another_tenants_file_is_refused_and_not_created(
    client: Client, database_owner: asyncpg.Connection
) -> None:
    acme = await owner_session(client, "acme")
    globex = await owner_session(client, "globex")
    mine = await upload(client, acme, b"acme's words\n")
    theirs = await upload(client, globex, b"globex's secret\n")
    for inputs in ([theirs["id"]], [mine["id"], theirs["id"]]):
        refused = await client.post(
            "/api/v1/tasks", headers=acme, json={"type": "file.inspect", "input_files": inputs}
        )
        assert_problem(refused, 422)
        assert theirs["id"] in refused.text
        assert "globex" not in refused.text
    assert await database_owner.fetchval("select count(*) from tasks") == 0
    # Nothing inspected it: its metadata is what the upload wrote.
    assert (await client.get(f"/api/v1/files/{theirs['id']}", headers=globex)).json()[
        "metadata"
    ] == theirs["metadata"]


async def test_an_export_of_another_tenants_project_fails_and_writes_nothing(
    settings: Settings, clean_state: None, database_owner: asyncpg.Connection
) -> None:
    async with AsyncTestClient(app=bootstrap.create_app(settings, with_worker=True)) as client:
        acme = await owner_session(client, "acme")
        globex = await owner_session(client, "globex")
        project = (
            await client.post("/api/v1/projects", headers=globex, json={"name": "Secret"})
        ).json()
        document = await client.post(
            f"/api/v1/projects/{project['id']}/documents",
            headers=globex,
            json={"title": "Plans", "content": "globex only"},
        )
        assert document.status_code == 201, document.text
        before = await database_owner.fetch("select id, updated_at, version from documents")
        # Only the config's shape is checked at submission; the tenant is the handler's.
        submitted = await client.post(
            "/api/v1/tasks",
            headers=acme,
            json={"type": "project.export", "config": {"project_id": project["id"]}},
        )
        assert submitted.status_code == 202, submitted.text
        task = await wait_for_task(client, acme, submitted.json()["id"], "completed", "failed")
    assert (task["status"], task["error_message"]) == ("failed", "No such project.")
    assert (task["output_files"], task["result"]) == ([], None)
    assert await database_owner.fetchval("select count(*) from files") == 0
    assert await database_owner.fetch("select id, updated_at, version from documents") == before
    assert [key async for key, _ in create_storage(settings).objects(OBJECTS_PREFIX)] == []


async def wait_for_task(
    client: Client, headers: dict[str, str], task_id: str, *statuses: str
) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        task: dict[str, Any] = (
            await client.get(f"/api/v1/tasks/{task_id}", headers=headers)
        ).json()
        if task["status"] in statuses:
            return task
        assert time.monotonic() < deadline, f"task never reached {statuses}: {task}"
        await asyncio.sleep(0.05)


async def test_documents_under_another_tenants_project_are_404(
    client: Client, database_owner: asyncpg.Connection
) -> None:
    acme = await owner_session(client, "acme")
    globex = await owner_session(client, "globex")
    own = (await client.post("/api/v1/projects", headers=acme, json={"name": "Mine"})).json()
    theirs = (await client.post("/api/v1/projects", headers=globex, json={"name": "Theirs"})).json()
    document = (
        await client.post(
            f"/api/v1/projects/{theirs['id']}/documents",
            headers=globex,
            json={"title": "Plans", "content": "globex only"},
        )
    ).json()
    under_theirs = f"/api/v1/projects/{theirs['id']}/documents"
    for response in (
        await client.get(under_theirs, headers=acme),
        await client.post(under_theirs, headers=acme, json={"title": "x", "content": "y"}),
        await client.get(f"{under_theirs}/{document['id']}", headers=acme),
        # Their document through my own project: the pair must match, not each id alone.
        await client.get(f"/api/v1/projects/{own['id']}/documents/{document['id']}", headers=acme),
    ):
        assert_problem(response, 404)
        assert "globex only" not in response.text
    globex_id = (await client.get("/api/v1/auth/me", headers=globex)).json()["tenant_id"]
    rows = await database_owner.fetch("select id, tenant_id, project_id from documents")
    assert [tuple(map(str, row)) for row in rows] == [(document["id"], globex_id, theirs["id"])]


# Tenants made at distinct instants, as sign-ups make them, and in one transaction (a bulk
# import, a seed), where they share one created_at: the jobs page through tenants and must
# visit each once either way.
CREATED = ["distinct", "tied"]


async def many_tenants(database_owner: asyncpg.Connection, created: str) -> list[uuid.UUID]:
    """Tenants made in SQL: a sign-up each would cost a password hash."""
    step = timedelta(seconds=1) if created == "distinct" else timedelta(0)
    rows = await database_owner.fetch(
        "insert into tenants (id, name, slug, created_at) "
        "select gen_random_uuid(), 'Tenant ' || i, 'tenant-' || i, now() - i * $2::interval "
        "from generate_series(1, $1) i returning id",
        TENANTS,
        step,
    )
    return [row["id"] for row in rows]


async def queued(container: bootstrap.Container) -> set[str]:
    """Every job waiting: due in the queue, or in its tenant's backlog (the fair dispatch's)."""
    redis, name = container.job_queue.redis, container.settings.task_queue_name
    jobs = set(await redis.zrange(name, 0, -1))
    async for backlog in redis.scan_iter(match=f"{name}:fair:backlog:*"):
        jobs |= set(await redis.lrange(backlog, 0, -1))
    return {job.decode() for job in jobs}


@pytest.mark.parametrize("created", CREATED)
async def test_reconcile_and_reap_move_only_what_they_should_in_every_tenant(
    container: bootstrap.Container, database_owner: asyncpg.Connection, created: str
) -> None:
    tenants = await many_tenants(database_owner, created)
    kinds = {
        # (status, age, heartbeat age): old rows are an hour old, the jobs' cutoff is minutes.
        "lost_pending": ("pending", HOUR, None),
        "fresh_pending": ("pending", NOW, None),
        "stale_processing": ("processing", HOUR, HOUR),
        "live_processing": ("processing", HOUR, NOW),
    }
    ids: dict[str, set[str]] = {kind: set() for kind in kinds}
    for kind, (state, age, heartbeat) in kinds.items():
        rows = await database_owner.fetch(
            "insert into tasks (id, tenant_id, type, status, created_at, updated_at, heartbeat_at) "
            "select gen_random_uuid(), t, 'noop', $2, now() - $3::interval, now(), "
            "  now() - $4::interval from unnest($1::uuid[]) t returning id",
            tenants,
            state,
            age,
            heartbeat,
        )
        ids[kind] = {str(row["id"]) for row in rows}
    cutoff = timedelta(minutes=10)
    units, queue, clock = container.unit_of_work, container.job_queue, container.clock

    reconcile = ReconcileTasks(units=units, queue=queue, clock=clock, stale_after=cutoff)
    assert await reconcile(per_tenant=7) == TENANTS
    assert await queued(container) == ids["lost_pending"]

    reap = ReapTasks(units=units, queue=queue, clock=clock, stale_after=cutoff, max_attempts=5)
    assert await reap(per_tenant=7) == TENANTS
    assert await queued(container) == ids["lost_pending"] | ids["stale_processing"]

    rows = await database_owner.fetch(
        "select id, status, heartbeat_at > now() - interval '1 minute' live from tasks"
    )
    now = {str(row["id"]): (row["status"], row["live"]) for row in rows}
    assert {now[i] for i in ids["stale_processing"]} == {("pending", False)}
    assert {now[i] for i in ids["live_processing"]} == {("processing", True)}
    assert {now[i][0] for i in ids["lost_pending"] | ids["fresh_pending"]} == {"pending"}


@pytest.mark.parametrize("created", CREATED)
async def test_the_sweep_moves_only_expired_rows_and_true_orphans_across_tenants(
    container: bootstrap.Container, database_owner: asyncpg.Connection, created: str
) -> None:
    tenants = await many_tenants(database_owner, created)
    keys: dict[str, set[str]] = {}
    live: list[uuid.UUID] = []
    for kind, deleted in (("live", None), ("expired", timedelta(days=30)), ("recent", DAY)):
        ids = [uuid.uuid4() for _ in tenants]
        keys[kind] = {object_key(t, i) for t, i in zip(tenants, ids, strict=True)}
        await database_owner.execute(
            "insert into files (id, tenant_id, original_filename, size, content_type, sha256, "
            "  storage_key, created_at, updated_at, deleted_at) "
            "select i, t, 'f.txt', 1, 'text/plain', '', "
            "  'tenants/' || t || '/files/' || i, now(), now(), now() - $3::interval "
            "from unnest($1::uuid[], $2::uuid[]) as f(t, i)",
            tenants,
            ids,
            deleted,
        )
        live = live or ids
    # Under each tenant's prefix: an object no row names, and one named after the next
    # tenant's live file, a row that exists only in that other tenant.
    keys["orphan"] = {object_key(t, uuid.uuid4()) for t in tenants} | {
        object_key(t, live[(index + 1) % TENANTS]) for index, t in enumerate(tenants)
    }
    for key in set().union(*keys.values()):
        await container.storage.put(key, one_chunk(b"x"))

    async with container.unit_of_work() as uow:
        report = await SweepFiles(container.files(uow))(
            retention=timedelta(days=7), orphan_age=timedelta(0), batch=7
        )
    assert (report.purged, report.orphans) == (TENANTS, 2 * TENANTS)
    left = {key async for key, _ in container.storage.objects(OBJECTS_PREFIX)}
    assert left == keys["live"] | keys["recent"]
    rows = await database_owner.fetch("select storage_key from files")
    assert {row["storage_key"] for row in rows} == keys["live"] | keys["recent"]


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_a_suspended_tenants_credentials_stop_and_come_back(
    client: Client, superuser: dict[str, str]
) -> None:
    created = await create_tenant(client, "acme")
    tenant_id = created["tenant"]["id"]
    token = bearer(await login(client, "acme", "olive"))
    key = (await client.post("/api/v1/auth/api-keys", headers=token, json={"name": "ci"})).json()[
        "key"
    ]
    api_key = {"X-API-Key": key}

    async def answers() -> list[int]:
        return [
            (await client.get("/api/v1/projects", headers=headers)).status_code
            for headers in (api_key, token)
        ]

    assert await answers() == [200, 200]
    for status, expected in (("suspended", [401, 401]), ("active", [200, 200])):
        patched = await client.patch(
            f"/api/v1/admin/tenants/{tenant_id}", headers=superuser, json={"status": status}
        )
        assert patched.status_code == 200, patched.text
        assert await answers() == expected, status

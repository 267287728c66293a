"""Tenant erasure on the real engines, as the app role: every row of the erased tenant gone
from every tenant table the catalog lists (so a table added later is covered), every object
under its prefix gone (local disk and S3), the other tenant untouched; an erasure stopped half
way finished by the next run; credentials refused at once; bad requests refused."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta

import asyncpg
import pytest
from redis.asyncio import Redis

from tenantry import bootstrap
from tenantry.application.erasure import FinishErasures, ResumeErasures, RunErasure
from tenantry.config import Settings
from tenantry.domain.erasure import ErasureState, tenant_prefix
from tenantry.domain.ports import UnitOfWork
from tenantry.domain.tasks import TaskRepository, TaskStatus
from tenantry.infrastructure.jobs.worker import erase_tenant

from ..conftest import Client, LogLines, plain_url
from .identity import add_user, bearer, create_tenant, login, owner_session
from .test_cli import in_process
from .test_concurrency import Caller, served_to, upload_held_half_way, worker_adapters
from .test_files import on_storage, stored_objects
from .test_health import assert_problem
from .test_rls import Seeder, tenant_tables
from .test_tasks import Gated, actor_of, fresh_job, submit_gated, worker_side

# Rows of every tenant table per tenant: with a batch of 2, each table takes several batches.
ROWS_PER_TABLE = 3


class Crash(Exception):
    """The worker dies here."""


class RecordingQueue:
    """The erasure queue of a test that runs the job itself: what was enqueued."""

    def __init__(self) -> None:
        self.enqueued: list[uuid.UUID] = []

    async def enqueue(self, erasure_id: uuid.UUID, *, request_id: str | None) -> None:
        self.enqueued.append(erasure_id)


@pytest.fixture
async def container(settings: Settings) -> AsyncIterator[bootstrap.Container]:
    async with worker_adapters(settings) as container:
        yield container


async def seed_every_table(
    database_owner: asyncpg.Connection, tenants: list[uuid.UUID]
) -> dict[str, dict[uuid.UUID, int]]:
    """ROWS_PER_TABLE rows of every tenant table for each tenant; the counts by table and
    tenant, read back."""
    tables = await tenant_tables(database_owner)
    seeder = Seeder(database_owner, tables)
    await seeder.seed(tenants)
    for table in tables:
        for tenant in tenants:
            for _ in range(ROWS_PER_TABLE - 1):
                await seeder.insert(table, seeder.values(table, tenant))
    return await row_counts(database_owner)


async def row_counts(database_owner: asyncpg.Connection) -> dict[str, dict[uuid.UUID, int]]:
    counts: dict[str, dict[uuid.UUID, int]] = {}
    for table in await tenant_tables(database_owner):
        rows = await database_owner.fetch(
            f'select tenant_id, count(*) from "{table}" group by tenant_id'
        )
        counts[table] = {row["tenant_id"]: row["count"] for row in rows}
    return counts


async def store_objects(container: bootstrap.Container, tenant: uuid.UUID, count: int) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"tenant bytes"

    for _ in range(count):
        await container.storage.put(f"{tenant_prefix(tenant)}files/{uuid.uuid4()}", body())


async def objects_of(container: bootstrap.Container, tenant: uuid.UUID) -> list[str]:
    return [key async for key, _ in container.storage.objects(tenant_prefix(tenant))]


async def slug_of(database_owner: asyncpg.Connection, tenant: uuid.UUID) -> str:
    slug: str = await database_owner.fetchval("select slug from tenants where id = $1", tenant)
    return slug


def crashing(
    container: bootstrap.Container, after: int
) -> Callable[[], AbstractAsyncContextManager[UnitOfWork]]:
    """The container's units of work, until the worker dies before the ``after``+1st."""
    begun = 0

    @asynccontextmanager
    async def units() -> AsyncIterator[UnitOfWork]:
        nonlocal begun
        begun += 1
        if begun > after:
            raise Crash
        async with container.unit_of_work() as uow:
            yield uow

    return units


@pytest.mark.parametrize("backend", ["local", "s3"])
async def test_every_row_and_object_of_the_tenant_goes_and_nothing_of_the_other(
    settings: Settings,
    s3_url: str,
    backend: str,
    client: Client,
    superuser: dict[str, str],
    database_owner: asyncpg.Connection,
) -> None:
    settings = on_storage(settings, backend, s3_url)
    erased, kept = uuid.uuid4(), uuid.uuid4()
    before = await seed_every_table(database_owner, [erased, kept])
    async with worker_adapters(settings) as container:
        await store_objects(container, erased, 3)
        await store_objects(container, kept, 2)
        kept_objects = sorted(await objects_of(container, kept))

        slug = await slug_of(database_owner, erased)
        response = await client.delete(
            f"/api/v1/admin/tenants/{erased}", params={"confirm": slug}, headers=superuser
        )
        assert response.status_code == 202, response.text
        erasure = response.json()
        assert erasure["tenant_id"] == str(erased)
        assert erasure["slug"] == slug
        assert erasure["state"] == "pending"
        assert erasure["requested_by_type"] == "superuser"

        ended = await RunErasure(
            units=container.unit_of_work, storage=container.storage, clock=container.clock, batch=2
        )(uuid.UUID(erasure["id"]))
        assert ended is not None
        assert ended.state == ErasureState.FINISHED

        assert await objects_of(container, erased) == []
        assert sorted(await objects_of(container, kept)) == kept_objects
        if backend == "local":
            assert not any(str(erased) in path for path in stored_objects(settings))

    after = await row_counts(database_owner)
    for table, counts in after.items():
        assert erased not in counts, table
        assert counts.get(kept) == before[table][kept] == ROWS_PER_TABLE, table
    assert await database_owner.fetchval("select count(*) from tenants where id = $1", erased) == 0
    assert await database_owner.fetchval("select count(*) from tenants where id = $1", kept) == 1

    # Every removed row is counted, by table, with the objects.
    assert ended.progress.tables == dict.fromkeys(before, ROWS_PER_TABLE)
    assert ended.progress.rows == ROWS_PER_TABLE * len(before)
    assert ended.progress.objects == 3
    shown = await client.get(f"/api/v1/admin/erasures/{erasure['id']}", headers=superuser)
    assert shown.status_code == 200, shown.text
    assert shown.json()["state"] == "finished"
    assert shown.json()["progress"]["rows"] == ROWS_PER_TABLE * len(before)
    listed = (await client.get("/api/v1/admin/erasures", headers=superuser)).json()
    assert [item["id"] for item in listed["items"]] == [erasure["id"]]

    # The log outlives the tenant; the tenant is unknown from now on.
    again = await client.delete(
        f"/api/v1/admin/tenants/{erased}", params={"confirm": slug}, headers=superuser
    )
    assert_problem(again, 404)


async def test_an_erasure_stopped_half_way_is_found_quiet_and_finished(
    client: Client,
    superuser: dict[str, str],
    database_owner: asyncpg.Connection,
    container: bootstrap.Container,
) -> None:
    erased, kept = uuid.uuid4(), uuid.uuid4()
    before = await seed_every_table(database_owner, [erased, kept])
    await store_objects(container, erased, 2)
    slug = await slug_of(database_owner, erased)
    response = await client.delete(
        f"/api/v1/admin/tenants/{erased}", params={"confirm": slug}, headers=superuser
    )
    assert response.status_code == 202, response.text
    erasure_id = uuid.UUID(response.json()["id"])

    # The worker dies after its start and four batches of one row.
    dying = RunErasure(
        units=crashing(container, after=6),
        storage=container.storage,
        clock=container.clock,
        batch=1,
    )
    with pytest.raises(Crash):
        await dying(erasure_id)
    half = await database_owner.fetchrow(
        "select state, rows_removed from tenant_erasures where id = $1", erasure_id
    )
    assert half["state"] == "running"
    assert 0 < half["rows_removed"] < ROWS_PER_TABLE * len(before)
    left = await row_counts(database_owner)
    assert sum(counts.get(erased, 0) for counts in left.values()) == (
        ROWS_PER_TABLE * len(before) - half["rows_removed"]
    )

    # The sweep finds it quiet and queues it again; the next run finishes it.
    queue = RecordingQueue()
    sweep = ResumeErasures(
        units=container.unit_of_work,
        queue=queue,
        clock=container.clock,
        quiet=timedelta(seconds=-1),
    )
    assert [erasure.id for erasure in await sweep()] == [erasure_id]
    assert queue.enqueued == [erasure_id]
    ended = await RunErasure(
        units=container.unit_of_work, storage=container.storage, clock=container.clock, batch=2
    )(erasure_id)
    assert ended is not None
    assert ended.state == ErasureState.FINISHED
    assert ended.progress.rows == ROWS_PER_TABLE * len(before)
    assert ended.progress.objects == 2
    assert ended.started_at is not None
    assert ended.started_at <= ended.finished_at  # type: ignore[operator]
    after = await row_counts(database_owner)
    for table, counts in after.items():
        assert erased not in counts, table
        assert counts[kept] == ROWS_PER_TABLE, table
    assert await objects_of(container, erased) == []

    # Finished is finished: another run or sweep changes nothing.
    assert await sweep() == []
    again = await RunErasure(
        units=container.unit_of_work, storage=container.storage, clock=container.clock
    )(erasure_id)
    assert again == ended
    assert (
        await FinishErasures(
            units=container.unit_of_work, run=container.run_erasure(), clock=container.clock
        )()
        == []
    )


async def test_the_owners_credentials_stop_at_once_and_its_tasks_are_cancelled(
    client: Client,
    superuser: dict[str, str],
    database_owner: asyncpg.Connection,
    redis_url: str,
) -> None:
    await create_tenant(client, "acme")
    tokens = await login(client, "acme", "olive")
    owner = bearer(tokens)
    key = (await client.post("/api/v1/auth/api-keys", headers=owner, json={"name": "ci"})).json()
    queued = await client.post("/api/v1/tasks", headers=owner, json={"type": "noop"})
    assert queued.status_code == 202, queued.text
    other = await owner_session(client, "globex")

    response = await client.post(
        "/api/v1/tenant/erase",
        headers={**owner, "X-Request-ID": "erase-acme-1"},
        json={"confirm": "acme"},
    )
    assert response.status_code == 202, response.text
    erasure = response.json()
    me = (await client.get("/api/v1/auth/me", headers=other)).json()
    assert erasure["requested_by_type"] == "owner"
    assert erasure["state"] == "pending"
    assert erasure["progress"] == {"rows": 0, "objects": 0, "tables": {}}

    assert_problem(await client.get("/api/v1/auth/me", headers=owner), 401)
    assert_problem(await client.get("/api/v1/auth/me", headers={"X-API-Key": key["key"]}), 401)
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert_problem(refreshed, 401)
    relogin = await client.post(
        "/api/v1/auth/login", json={"tenant": "acme", "login": "olive", "password": "x" * 12}
    )
    assert_problem(relogin, 401)
    # Another tenant carries on.
    assert (await client.get("/api/v1/auth/me", headers=other)).json() == me

    task = await database_owner.fetchrow(
        "select status, error_message from tasks where id = $1", uuid.UUID(queued.json()["id"])
    )
    assert (task["status"], task["error_message"]) == ("cancelled", "The tenant is being erased.")
    logged = await database_owner.fetchrow(
        "select * from tenant_erasures where id = $1", uuid.UUID(erasure["id"])
    )
    assert logged["request_id"] == "erase-acme-1"
    assert str(logged["requested_by"]) == erasure["requested_by"]
    assert logged["erased_tenant_id"] == uuid.UUID(erasure["tenant_id"])
    # The job is queued under the erasure's id, after the commit.
    redis = Redis.from_url(redis_url)
    try:
        assert await redis.exists(f"arq:job:erasure:{erasure['id']}") == 1
    finally:
        await redis.aclose()

    shown = await client.get(f"/api/v1/admin/erasures/{erasure['id']}", headers=superuser)
    assert shown.json() == erasure


async def test_a_running_task_of_the_tenant_stops(
    settings: Settings, client: Client, superuser: dict[str, str]
) -> None:
    owner = await owner_session(client, "acme")
    actor = await actor_of(client, owner)
    gate = Gated()
    async with worker_side(settings, gate) as (container, run):
        task = await submit_gated(container, actor)
        running = asyncio.create_task(fresh_job(run, task))
        await gate.started.wait()
        response = await client.delete(
            f"/api/v1/admin/tenants/{actor.tenant_id}",
            params={"confirm": "acme"},
            headers=superuser,
        )
        assert response.status_code == 202, response.text
        gate.proceed.set()
        await running
        assert gate.finished == 0
        async with container.unit_of_work() as uow:
            stopped = await uow.repository(TaskRepository, actor.tenant_id).get(task.id)
        assert stopped is not None
        assert stopped.status == TaskStatus.CANCELLED


async def test_the_worker_job_erases_and_logs_its_counts(
    client: Client,
    superuser: dict[str, str],
    container: bootstrap.Container,
    database_owner: asyncpg.Connection,
    log_lines: LogLines,
) -> None:
    owner = await owner_session(client, "acme")
    project = await client.post("/api/v1/projects", headers=owner, json={"name": "Apollo"})
    assert project.status_code == 201, project.text
    tenant_id = (await client.get("/api/v1/auth/me", headers=owner)).json()["tenant_id"]
    response = await client.post("/api/v1/tenant/erase", headers=owner, json={"confirm": "acme"})
    erasure = response.json()

    await erase_tenant({"erase": container.run_erasure()}, erasure["id"], "erase-acme-2")

    assert await database_owner.fetchval("select count(*) from tenants where slug = 'acme'") == 0
    lines = [line for line in log_lines.of("tenantry.worker") if "erasure" in line["message"]]
    assert [line["message"] for line in lines] == [
        "tenant erasure starting",
        "tenant erasure finished",
    ]
    finished = lines[-1]
    assert finished["erasure_id"] == erasure["id"]
    assert finished["request_id"] == "erase-acme-2"
    assert finished["tenant_id"] == tenant_id
    assert finished["state"] == "finished"
    # The owner, its session, the project, and the audit events of the three creations.
    assert finished["tables"] == {
        "users": 1,
        "refresh_tokens": 1,
        "projects": 1,
        "audit_events": 3,
    }
    assert finished["rows"] == sum(finished["tables"].values())


async def test_who_may_erase_and_what_they_must_confirm(
    client: Client, superuser: dict[str, str]
) -> None:
    created = await create_tenant(client, "acme")
    tenant_id = created["tenant"]["id"]
    owner = bearer(await login(client, "acme", "olive"))
    admin = await add_user(client, owner, "ada", ["admin"], "acme")
    member = await add_user(client, owner, "max", ["member"], "acme")
    other_owner = await owner_session(client, "globex")

    wrong = await client.post("/api/v1/tenant/erase", headers=owner, json={"confirm": "acm"})
    assert assert_problem(wrong, 422)["errors"] == [
        {"field": "confirm", "message": "must be the slug of the tenant to erase"}
    ]
    missing = await client.post("/api/v1/tenant/erase", headers=owner, json={})
    assert [error["field"] for error in assert_problem(missing, 422)["errors"]] == ["confirm"]
    for who in (admin, member):
        assert_problem(
            await client.post("/api/v1/tenant/erase", headers=who, json={"confirm": "acme"}), 403
        )
    # Another tenant's owner erases only their own tenant: acme's slug is not theirs.
    assert_problem(
        await client.post("/api/v1/tenant/erase", headers=other_owner, json={"confirm": "acme"}),
        422,
    )
    assert_problem(
        await client.delete(
            f"/api/v1/admin/tenants/{tenant_id}", params={"confirm": "acme"}, headers=other_owner
        ),
        403,
    )
    assert_problem(
        await client.post("/api/v1/tenant/erase", headers=superuser, json={"confirm": "platform"}),
        403,
    )

    unknown = await client.delete(
        f"/api/v1/admin/tenants/{uuid.uuid4()}", params={"confirm": "acme"}, headers=superuser
    )
    assert_problem(unknown, 404)
    malformed = await client.delete(
        "/api/v1/admin/tenants/not-a-uuid", params={"confirm": "acme"}, headers=superuser
    )
    assert malformed.status_code in (400, 404)
    assert malformed.headers["content-type"].startswith("application/problem+json")
    no_confirm = await client.delete(f"/api/v1/admin/tenants/{tenant_id}", headers=superuser)
    assert "confirm" in str(assert_problem(no_confirm, 400))
    assert_problem(
        await client.delete(
            f"/api/v1/admin/tenants/{tenant_id}", params={"confirm": "globex"}, headers=superuser
        ),
        422,
    )
    platform = (await client.get("/api/v1/auth/me", headers=superuser)).json()["tenant_id"]
    assert_problem(
        await client.delete(
            f"/api/v1/admin/tenants/{platform}", params={"confirm": "platform"}, headers=superuser
        ),
        403,
    )
    for who in (owner, member):
        assert_problem(await client.get("/api/v1/admin/erasures", headers=who), 403)

    # Nothing above erased anything; the tenant still works.
    assert (await client.get("/api/v1/auth/me", headers=owner)).status_code == 200

    first = await client.delete(
        f"/api/v1/admin/tenants/{tenant_id}", params={"confirm": "ACME "}, headers=superuser
    )
    assert first.status_code == 202, first.text
    # Asked again while under way: the same erasure.
    second = await client.delete(
        f"/api/v1/admin/tenants/{tenant_id}", params={"confirm": "acme"}, headers=superuser
    )
    assert second.status_code == 202
    assert second.json()["id"] == first.json()["id"]
    assert_problem(
        await client.get(f"/api/v1/admin/erasures/{uuid.uuid4()}", headers=superuser), 404
    )


async def test_the_app_role_cannot_erase_the_trail_of_a_live_tenant_nor_the_log(
    client: Client, app_database_url: str
) -> None:
    created = await create_tenant(client, "acme")
    tenant_id = uuid.UUID(created["tenant"]["id"])
    app_role = await asyncpg.connect(plain_url(app_database_url))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="no erasure under way"):
            await app_role.fetchval("select erase_tenant_rows('audit_events', $1, 100)", tenant_id)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app_role.execute("delete from tenant_erasures")
        # A tenant's delete cascades to its trail: the app may not, but for an erasure.
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await app_role.execute("delete from tenants where id = $1", tenant_id)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="no erasure under way"):
            await app_role.fetchval("select remove_erased_tenant($1)", tenant_id)
    finally:
        await app_role.close()
    owner = bearer(await login(client, "acme", "olive"))
    assert (await client.get("/api/v1/audit", headers=owner)).json()["items"]


async def test_an_operator_erases_and_resumes_from_the_cli(
    database_owner: asyncpg.Connection, app_database_url: str, redis_url: str, keyring_path: str
) -> None:
    erased, kept = uuid.uuid4(), uuid.uuid4()
    before = await seed_every_table(database_owner, [erased, kept])
    slug = await slug_of(database_owner, erased)
    env = {
        "TENANTRY_DATABASE_URL": app_database_url,
        "TENANTRY_REDIS_URL": redis_url,
        "TENANTRY_KEYRING_PATH": keyring_path,
    }
    code, _, err = await in_process("tenants", "erase", slug, "--confirm", "nope", **env)
    assert code == 1
    assert "confirm must be the slug of the tenant to erase" in err
    code, out, err = await in_process("tenants", "erase", slug, "--confirm", slug, **env)
    assert code == 0, err
    rows = ROWS_PER_TABLE * len(before)
    assert f"Erased tenant {slug} ({erased}): finished, {rows} rows and 0 objects" in out
    after = await row_counts(database_owner)
    assert all(erased not in counts for counts in after.values())
    logged = await database_owner.fetchrow("select * from tenant_erasures")
    assert (logged["requested_by_type"], logged["requested_by"]) == ("operator", None)

    code, out, err = await in_process("tenants", "erase", "--resume", **env)
    assert code == 0, err
    assert "No unfinished erasure." in out


@pytest.mark.parametrize(
    ("credential", "erased_midway"),
    [("bearer", True), ("api_key", False)],
    ids=["erased", "suspended"],
)
async def test_an_upload_under_way_when_its_tenant_is_erased_stores_nothing(
    settings: Settings, database_owner: asyncpg.Connection, credential: str, erased_midway: bool
) -> None:
    """An upload of more than 1 MiB confirms its credentials in its first transaction and
    writes its row in its last, after its bytes: its tenant suspended for erasure in between,
    or erased outright, the upload is a 401 (what the tenant's next request gets), not a 500 on
    the row's key to a tenant that is gone nor a file for a tenant being erased. Its object and
    its hold are given back, and the erasure leaves nothing of the tenant."""
    caller = Caller("acme", "globex")
    async with served_to(settings, caller) as http, worker_adapters(settings) as container:
        if credential == "api_key":
            made = await http.post(
                "/api/v1/auth/api-keys", headers=caller.headers, json={"name": "uploads"}
            )
            uploader = {"X-API-Key": made.json()["key"]}
        else:
            uploader = caller.headers
        tenant_id = uuid.UUID(caller.tenant_id)
        async with upload_held_half_way(http, database_owner, tenant_id, uploader) as finish:
            asked = await http.post(
                "/api/v1/tenant/erase", headers=caller.headers, json={"confirm": caller.slug}
            )
            assert asked.status_code == 202, asked.text
            erase = {"erase": container.run_erasure()}
            if erased_midway:
                await erase_tenant(erase, asked.json()["id"], None)
            answer = await finish()
        assert_problem(answer, 401)
        if not erased_midway:
            # The hold was given back: nothing reserved, nothing used, no row.
            usage = await database_owner.fetchrow(
                "select used_bytes, file_count, reserved_bytes from file_usage where id = $1",
                tenant_id,
            )
            assert tuple(usage) == (0, 0, 0)
            files = "select count(*) from files where tenant_id = $1"
            assert await database_owner.fetchval(files, tenant_id) == 0
            await erase_tenant(erase, asked.json()["id"], None)
        assert await objects_of(container, tenant_id) == []
        assert not any(caller.tenant_id in path for path in stored_objects(settings))
    for table, counts in (await row_counts(database_owner)).items():
        assert tenant_id not in counts, table
    tenants = "select count(*) from tenants where id = $1"
    assert await database_owner.fetchval(tenants, tenant_id) == 0

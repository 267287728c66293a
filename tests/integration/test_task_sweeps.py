"""The task sweeps across tenants (migration 0009_task_sweeps): one statement per sweep, run by
the app role through two SECURITY DEFINER functions that do that and nothing else, while the app
role itself still sees one tenant's tasks at most."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url

from tenantry import bootstrap
from tenantry.application.tasks.maintenance import ReapTasks
from tenantry.config import Settings
from tenantry.domain.tasks import WORKER_LOST, Task, TaskRepository, TaskStatus, TaskSweeps
from tenantry.infrastructure.db import database
from tenantry.infrastructure.db.rls import APP_ROLE, MAINTENANCE_ROLE

from ..conftest import plain_url
from .test_tenancy import engine_for

PROBE = "tenantry_probe_"
HOUR = timedelta(hours=1)


class Committed:
    """Each sweep in a unit of work of its own (as the app role), committed, as the worker's
    use cases run them."""

    def __init__(self, container: bootstrap.Container) -> None:
        self.container = container

    async def reap(
        self, stale_before: datetime, *, max_attempts: int, per_tenant: int
    ) -> list[Task]:
        """As ReapTasks: one sweep finds them, then each tenant's transaction takes its back."""
        async with self.container.unit_of_work() as uow:
            found = await uow.platform(TaskSweeps).stranded(stale_before, per_tenant=per_tenant)
        reaped: list[Task] = []
        for tenant in sorted({tenant for tenant, _ in found}):
            async with self.container.unit_of_work() as uow:
                reaped += await uow.repository(TaskRepository, tenant).reap(
                    [task_id for owner, task_id in found if owner == tenant],
                    stale_before=stale_before,
                    max_attempts=max_attempts,
                    at=datetime.now(UTC),
                )
                await uow.commit()
        return reaped

    async def stale_pending(self, created_before: datetime, **limits: int) -> list[Task]:
        async with self.container.unit_of_work() as uow:
            return list(await uow.platform(TaskSweeps).stale_pending(created_before, **limits))


@pytest.fixture
async def container(settings: Settings) -> AsyncIterator[bootstrap.Container]:
    container = bootstrap.Container(settings)
    yield container
    await container.close()
    await container.alchemy.get_engine().dispose()


@pytest.fixture
def sweeps(container: bootstrap.Container) -> tuple[Committed, list[str]]:
    """The sweeps, and every statement they send."""
    statements: list[str] = []

    def sent(*args: Any) -> None:
        statements.append(args[2])

    event.listen(container.alchemy.get_engine().sync_engine, "before_cursor_execute", sent)
    return Committed(container), statements


@pytest.fixture
async def app_role(app_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(plain_url(app_database_url))
    yield connection
    await connection.close()


async def tenants(owner: asyncpg.Connection, count: int) -> list[uuid.UUID]:
    rows = await owner.fetch(
        "insert into tenants (id, name, slug, created_at, updated_at) "
        "select gen_random_uuid(), 'Tenant ' || i, 'sweep-' || i, now(), now() "
        "from generate_series(1, $1) i returning id",
        count,
    )
    return [row["id"] for row in rows]


async def task(
    owner: asyncpg.Connection,
    tenant: uuid.UUID,
    status: str,
    *,
    age: timedelta = HOUR,
    heartbeat: timedelta | None = None,
    retry_count: int = 0,
) -> uuid.UUID:
    now = datetime.now(UTC)
    found: uuid.UUID = await owner.fetchval(
        "insert into tasks (id, tenant_id, type, status, retry_count, created_at, updated_at, "
        "  heartbeat_at, result, output_files) "
        "values (gen_random_uuid(), $1, 'noop', $2, $3, $4, $4, $5, '{\"partial\": 1}', "
        "  array[gen_random_uuid()]) returning id",
        tenant,
        status,
        retry_count,
        now - age,
        None if heartbeat is None else now - heartbeat,
    )
    return found


async def test_one_reap_takes_back_the_stranded_tasks_of_every_tenant(
    database_owner: asyncpg.Connection, sweeps: tuple[Committed, list[str]]
) -> None:
    task_sweeps, statements = sweeps
    a, b = await tenants(database_owner, 2)
    stranded = {t: await task(database_owner, t, "processing", heartbeat=HOUR) for t in (a, b)}
    spent = {
        t: await task(database_owner, t, "processing", heartbeat=HOUR, retry_count=2)
        for t in (a, b)
    }
    alive = await task(database_owner, a, "processing", heartbeat=timedelta(0))
    others = [await task(database_owner, b, status) for status in ("pending", "completed")]
    before = {row["id"]: dict(row) for row in await database_owner.fetch("select * from tasks")}

    cutoff = datetime.now(UTC) - timedelta(minutes=1)
    reaped = await task_sweeps.reap(cutoff, max_attempts=3, per_tenant=100)

    # One statement finds them in every tenant, one per tenant takes them back.
    assert sum("tenantry_stranded_tasks" in sql for sql in statements) == 1, statements
    assert sum("UPDATE tasks" in sql for sql in statements) == 2, statements
    assert {(t.tenant_id, t.id, t.status) for t in reaped} == {
        *((tenant, id_, TaskStatus.PENDING) for tenant, id_ in stranded.items()),
        *((tenant, id_, TaskStatus.FAILED) for tenant, id_ in spent.items()),
    }
    rows = {row["id"]: row for row in await database_owner.fetch("select * from tasks")}
    for id_ in stranded.values():
        row = rows[id_]
        assert (row["status"], row["error_message"]) == ("pending", "worker lost")
        assert (row["result"], row["output_files"]) == (
            '{"partial": 1}',
            before[id_]["output_files"],
        )
        assert row["completed_at"] is None
    for id_ in spent.values():
        row = rows[id_]
        assert (row["status"], row["error_message"]) == ("failed", WORKER_LOST)
        assert (row["result"], row["output_files"], row["retry_count"]) == (None, [], 2)
        assert row["completed_at"] is not None
    for id_ in (alive, *others):
        assert dict(rows[id_]) == before[id_]
    # Committed: the same sweep again finds nothing left.
    assert await task_sweeps.reap(cutoff, max_attempts=3, per_tenant=100) == []


async def test_a_task_the_reap_fails_is_on_its_tenants_trail(
    database_owner: asyncpg.Connection, container: bootstrap.Container
) -> None:
    """The system's change, recorded with it: one ``task.reaped`` event for the task whose
    attempts were spent, on its own tenant's trail, none for the task sent back to pending."""
    a, b = await tenants(database_owner, 2)
    spent = await task(database_owner, a, "processing", heartbeat=HOUR, retry_count=2)
    await task(database_owner, b, "processing", heartbeat=HOUR)
    await container.start()
    reap = ReapTasks(
        units=container.unit_of_work,
        queue=container.job_queue,
        clock=container.clock,
        stale_after=timedelta(minutes=1),
        max_attempts=3,
    )
    assert await reap() == 2
    rows = await database_owner.fetch(
        "select tenant_id, actor_type, actor_id, action, target_type, target_id, changes "
        "from audit_events"
    )
    assert [
        (row["tenant_id"], row["actor_type"], row["actor_id"], row["action"], row["target_id"])
        for row in rows
    ] == [(a, "system", None, "task.reaped", spent)]
    assert json.loads(rows[0]["changes"]) == {"after": {"type": "noop", "status": "failed"}}


async def test_a_sweep_takes_each_tenants_oldest_up_to_its_share(
    database_owner: asyncpg.Connection, sweeps: tuple[Committed, list[str]]
) -> None:
    task_sweeps, statements = sweeps
    a, b = await tenants(database_owner, 2)
    a_old, a_older = [
        await task(database_owner, a, "processing", heartbeat=age) for age in (HOUR, 2 * HOUR)
    ]
    b_old = await task(database_owner, b, "processing", heartbeat=HOUR)
    cutoff = datetime.now(UTC) - timedelta(minutes=1)
    first = await task_sweeps.reap(cutoff, max_attempts=3, per_tenant=1)
    assert {t.id for t in first} == {a_older, b_old}
    assert [t.id for t in await task_sweeps.reap(cutoff, max_attempts=3, per_tenant=1)] == [a_old]

    # Reaped tasks are pending again, and would be found below.
    await database_owner.execute("delete from tasks")
    a_pending = [await task(database_owner, a, "pending", age=age * HOUR) for age in (3, 2, 1)]
    b_pending = await task(database_owner, b, "pending", age=HOUR)
    await task(database_owner, b, "pending", age=timedelta(0))
    await task(database_owner, b, "failed", age=2 * HOUR)
    statements.clear()
    stale = await task_sweeps.stale_pending(cutoff, per_tenant=2)
    assert len(statements) == 1, statements
    assert {(t.tenant_id, t.id) for t in stale} == {
        (a, a_pending[0]),
        (a, a_pending[1]),
        (b, b_pending),
    }


async def test_the_app_role_still_sees_only_the_tenant_set_for_it(
    database_owner: asyncpg.Connection, app_role: asyncpg.Connection
) -> None:
    a, b = await tenants(database_owner, 2)
    for tenant in (a, b):
        await task(database_owner, tenant, "pending")
    async with app_role.transaction():
        swept = await app_role.fetch("select * from tenantry_stale_pending_tasks(now(), 100)")
        assert {row["tenant_id"] for row in swept} == {a, b}
        # Beside the sweep, in the same transaction, plain statements see no tenant's tasks...
        assert await app_role.fetchval("select count(*) from tasks") == 0
        # ...and with a tenant set, that tenant's only.
        await app_role.execute(f"SET LOCAL app.tenant_id = '{a}'")
        seen = await app_role.fetch("select tenant_id from tasks")
        assert [row["tenant_id"] for row in seen] == [a]
        moved = "update tasks set status = 'processing' where tenant_id = $1"
        assert await app_role.execute(moved, b) == "UPDATE 0"
    # Nor can it take the maintenance role's policy for itself.
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_role.execute(f"set role {MAINTENANCE_ROLE}")


async def test_the_functions_are_the_app_roles_to_run_and_do_nothing_else(
    database_owner: asyncpg.Connection,
) -> None:
    functions = await database_owner.fetch(
        """
        select p.oid::regprocedure::text as signature, p.prosecdef, p.proconfig,
          pg_get_userbyid(p.proowner) as owner,
          array(select coalesce(nullif(e.grantee, 0)::regrole::text, 'PUBLIC')
                from aclexplode(p.proacl) e where e.privilege_type = 'EXECUTE' order by 1)
            as executors
        from pg_proc p where p.pronamespace = 'public'::regnamespace
        """
    )
    # The outbox's write (0019_webhooks), a sign-in's read and write (0023_login_statements),
    # the bearer check confirmed in a transaction's round trip (0024_confirm_roles), an
    # upload's row written at commit (0025_add_file), a document's (0027_add_document) and an
    # API key confirmed again at an upload's row (0032_confirm_api_key) run as their caller,
    # the app role, under the tenant policy: no privilege of their own.
    invokers = {row["signature"]: row for row in functions if not row["prosecdef"]}
    assert set(invokers) == {
        "tenantry_publish_webhook_event(uuid,uuid,text,jsonb)",
        "tenantry_user_by_login(uuid,text)",
        "tenantry_start_session(uuid,uuid,uuid,uuid,text,"
        "timestamp with time zone,timestamp with time zone)",
        "tenantry_confirm_roles(uuid,uuid,uuid,character varying[])",
        "tenantry_confirm_api_key(uuid,uuid,uuid,character varying[])",
        "tenantry_add_file(uuid,bigint,uuid,bigint,text,text,text,text,jsonb,text,uuid,"
        "timestamp with time zone)",
        "tenantry_add_document(uuid,uuid,uuid,uuid,text,text,jsonb,integer,"
        "timestamp with time zone,timestamp with time zone)",
    }
    for row in invokers.values():
        assert row["owner"] != MAINTENANCE_ROLE
        assert APP_ROLE in row["executors"]
        assert "PUBLIC" not in row["executors"]
    functions = [row for row in functions if row["prosecdef"]]
    # Times, counts and a tenant only: no table, column or SQL text a caller could point
    # elsewhere. (The audit purge is 0011_audit_events'. The erasure's, 0013_tenant_erasure's,
    # takes a table, but its owner may delete from audit_events only, and it refuses a tenant
    # with no erasure under way; so does 0015_tenant_removal's. The platform's audit page,
    # 0018_platform_audit's, takes ids, names, times and a count, and only reads. The webhook
    # claim and purge, 0019_webhooks', take counts and a time.)
    assert {row["signature"] for row in functions} == {
        "tenantry_claim_webhook_deliveries(integer,integer,integer)",
        "tenantry_purge_webhook_deliveries(timestamp with time zone,integer)",
        "tenantry_platform_audit(uuid,integer,uuid,text,text,uuid,"
        "timestamp with time zone,timestamp with time zone)",
        "tenantry_stale_pending_tasks(timestamp with time zone,integer)",
        "tenantry_stranded_tasks(timestamp with time zone,integer)",
        "purge_audit_events(uuid,timestamp with time zone,integer)",
        "erase_tenant_rows(regclass,uuid,integer)",
        "remove_erased_tenant(uuid)",
    }
    for row in functions:
        assert row["prosecdef"], row
        assert row["proconfig"] == ["search_path=pg_catalog, pg_temp"], row
        assert row["owner"] == MAINTENANCE_ROLE, row
        assert row["executors"] == sorted([APP_ROLE, MAINTENANCE_ROLE]), row

    role = await database_owner.fetchrow(
        "select * from pg_roles where rolname = $1", MAINTENANCE_ROLE
    )
    # On Citus it logs in: its functions reach the workers as it (tenantry db distribute).
    citus = await database_owner.fetchval(
        "select count(*) from pg_extension where extname = 'citus'"
    )
    assert role["rolcanlogin"] == bool(citus)
    for attribute in ("super", "bypassrls", "createrole", "createdb", "inherit"):
        assert not role[f"rol{attribute}"], attribute
    # No role but superusers can act as it or holds its privileges (a probe of the test
    # below, maybe running at once on a shared server, is granted it on purpose).
    acting = await database_owner.fetch(
        "select rolname from pg_roles where oid <> $1 and not rolsuper "
        # PostgreSQL 15 has no SET option on memberships: a member may always SET ROLE.
        "and case when current_setting('server_version_num')::int >= 160000 "
        "then pg_has_role(oid, $1, 'USAGE') or pg_has_role(oid, $1, 'SET') "
        "else pg_has_role(oid, $1, 'MEMBER') end "
        "and not starts_with(rolname, $2)",
        role["oid"],
        PROBE,
    )
    assert [row["rolname"] for row in acting] == []
    owned = await database_owner.fetch(
        """
        select 'relation ' || relname as object from pg_class where relowner = $1
        union all select 'function ' || proname from pg_proc where proowner = $1
        union all select 'schema ' || nspname from pg_namespace where nspowner = $1
        union all select 'type ' || typname from pg_type where typowner = $1
        """,
        role["oid"],
    )
    assert sorted(row["object"] for row in owned) == [
        "function erase_tenant_rows",
        "function purge_audit_events",
        "function remove_erased_tenant",
        "function tenantry_claim_webhook_deliveries",
        "function tenantry_platform_audit",
        "function tenantry_purge_webhook_deliveries",
        "function tenantry_stale_pending_tasks",
        "function tenantry_stranded_tasks",
    ]


async def test_even_as_the_functions_owner_only_unfinished_tasks_are_reached(
    database_owner: asyncpg.Connection,
) -> None:
    """What the functions could do at most, were they tricked: their owner's own rights."""
    [tenant] = await tenants(database_owner, 1)
    await task(database_owner, tenant, "processing", heartbeat=HOUR)
    await task(database_owner, tenant, "completed")
    tables = [
        row["tablename"]
        for row in await database_owner.fetch(
            "select tablename from pg_tables where schemaname = 'public'"
        )
    ]
    # audit_events: SELECT and DELETE under the tenant policy, for the audit purge;
    # webhook_deliveries: the claim's and the purge's.
    readable = ("tasks", "tenants", "audit_events", "webhook_deliveries")
    refused = [
        "select secret, url from webhook_endpoints",
        "update webhook_endpoints set active = true",
        "update webhook_deliveries set payload = payload",
        "update webhook_deliveries set status = 'succeeded'",
        "insert into webhook_deliveries (id) values (gen_random_uuid())",
        *(f'select * from "{table}"' for table in tables if table not in readable),
        "select name from tenants",
        "update audit_events set action = action",
        f"insert into audit_events (id, tenant_id, actor_type, action, target_type, created_at, "
        f"updated_at) values (gen_random_uuid(), '{tenant}', 'system', 'x', 'x', now(), now())",
        "delete from tasks",
        f"insert into tasks (id, tenant_id, type) values (gen_random_uuid(), '{tenant}', 'noop')",
        "update tasks set tenant_id = tenant_id",
        "update tasks set type = 'other'",
        # Finding stranded tasks is all it does to them: each tenant's reap changes its own.
        "update tasks set status = 'pending'",
    ]
    async with database_owner.transaction():
        await database_owner.execute(f"set local role {MAINTENANCE_ROLE}")
        for statement in refused:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with database_owner.transaction():
                    await database_owner.execute(statement)
        assert await database_owner.fetchval("select count(*) from tenants") == 1
        # No tenant set, no audit event in sight.
        assert await database_owner.fetchval("select count(*) from audit_events") == 0
        statuses = await database_owner.fetch("select status from tasks")
        assert [row["status"] for row in statuses] == ["processing"]


@pytest.fixture
async def other_role(
    database_owner: asyncpg.Connection, database_url: str
) -> AsyncIterator[tuple[str, str]]:
    """A role of this test alone (roles are cluster-wide): its name and a URL logging in as it."""
    name, password = f"{PROBE}{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    await database_owner.execute(f"create role {name} login password '{password}'")
    try:
        url = make_url(database_url).set(username=name, password=password)
        yield name, url.render_as_string(hide_password=False)
    finally:
        await database_owner.execute(f"drop role {name}")


async def test_a_role_without_the_grant_cannot_run_the_sweeps(
    database_owner: asyncpg.Connection, other_role: tuple[str, str]
) -> None:
    name, _ = other_role
    async with database_owner.transaction():
        await database_owner.execute(f"set local role {name}")
        for call in (
            "select * from tenantry_stranded_tasks(now(), 100)",
            "select * from tenantry_stale_pending_tasks(now(), 100)",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="for function"):
                async with database_owner.transaction():
                    await database_owner.execute(call)


async def test_start_up_flags_a_role_that_can_act_as_the_maintenance_role(
    database_owner: asyncpg.Connection, other_role: tuple[str, str]
) -> None:
    name, url = other_role
    await database_owner.execute(f"grant {MAINTENANCE_ROLE} to {name}")
    engine = engine_for(url)
    try:
        assert await database.role_problems(engine) == [f"is a member of {MAINTENANCE_ROLE}"]
    finally:
        await engine.dispose()

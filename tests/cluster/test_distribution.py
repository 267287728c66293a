"""The distributed schema: one tenant's statements run on one worker (Citus routes a statement
that names its tenant to the shard of that tenant: EXPLAIN shows a single task), `tenantry db
distribute` is idempotent, and migrations run on it."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import msgspec
from click.testing import CliRunner
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from tenantry.cli import main
from tenantry.config import Settings
from tenantry.infrastructure.db import catalog, citus, database, migrations
from tests.citus import CitusCluster
from tests.conftest import as_app_role, plain_url


async def tasks_of(connection: asyncpg.Connection, sql: str, *args: object) -> list[str]:
    plan = await connection.fetch(f"EXPLAIN {sql}", *args)
    return [row[0].strip() for row in plan if "Task Count" in row[0]]


async def test_a_tenants_get_by_id_and_create_run_on_one_worker(database_url: str) -> None:
    connection = await asyncpg.connect(plain_url(database_url))
    try:
        tenant, project = uuid.uuid4(), uuid.uuid4()
        get = "SELECT * FROM projects WHERE tenant_id = $1 AND id = $2"
        assert await tasks_of(connection, get, tenant, project) == ["Task Count: 1"]
        create = (
            "INSERT INTO projects (tenant_id, id, name, description, version, created_at, "
            "updated_at) VALUES ($1, $2, 'p', '', 1, now(), now())"
        )
        assert await tasks_of(connection, create, tenant, project) == ["Task Count: 1"]
        listing = "SELECT * FROM documents WHERE tenant_id = $1 ORDER BY created_at LIMIT 20"
        assert await tasks_of(connection, listing, tenant) == ["Task Count: 1"]
        # Every tenant at once is every shard: what the per-tenant statements avoid.
        everyone = await tasks_of(connection, "SELECT count(*) FROM projects")
        assert everyone != ["Task Count: 1"]
    finally:
        await connection.close()


async def test_the_apps_connections_are_shown_the_shards_and_list_none(
    citus_cluster: CitusCluster, database_url: str, settings: Settings
) -> None:
    """Citus hides shards from pg_class by a filter that makes asyncpg's type introspection (a
    new connection's first use of a type such as varchar[]) take 20-100 times as long, so the
    app's connections are shown them; where the app lists its tables (an export, an erasure),
    a node holding shards still lists each table once."""
    name = make_url(database_url).database or ""
    on_worker = as_app_role(citus_cluster.workers[0].url(name))
    _, on_coordinator = await seen_by_the_app(settings, settings.required("database_url"))
    shards, worker_tables = await seen_by_the_app(settings, on_worker)
    # The worker holds projects' shards and shows them: its list leaves them out all the same.
    assert shards > 0
    assert worker_tables == on_coordinator
    assert "projects" in [table.name for table in on_coordinator]


async def seen_by_the_app(settings: Settings, url: str) -> tuple[int, list[catalog.TenantTable]]:
    """Through the app's engine on ``url``: the shards of projects it sees in pg_class, and
    the tenant tables it lists."""
    engine = database.alchemy_config(
        msgspec.structs.replace(settings, database_url=url)
    ).get_engine()
    try:
        async with engine.connect() as connection:
            shown = "SELECT current_setting('citus.show_shards_for_app_name_prefixes')"
            assert await connection.scalar(text(shown)) == "*"
            assert await connection.scalar(text("SELECT ARRAY['a']::varchar[]")) == ["a"]
            shards = await connection.scalar(
                text("SELECT count(*) FROM pg_class WHERE relname LIKE 'projects\\_%'")
            )
            return int(shards or 0), await catalog.tenant_tables(connection)
    finally:
        await engine.dispose()


def test_distribute_again_changes_nothing(database_url: str) -> None:
    runner = CliRunner()
    done = runner.invoke(
        main,
        ["db", "distribute"],
        env={"TENANTRY_DATABASE_URL": database_url},
    )
    assert done.exit_code == 0, done.output
    assert "distributed by tenant_id: (all already)" in done.output
    assert "0 foreign keys re-created" in done.output


async def test_migrations_run_on_the_distributed_schema(database_url: str) -> None:
    # The last revision's functions and grants, down and up again on distributed tables.
    await asyncio.to_thread(migrations.downgrade, database_url, "0020_citus_forms")
    await asyncio.to_thread(migrations.upgrade, database_url, "head")
    # Made after the tables were distributed: distributed by its tenant all the same.
    connection = await asyncpg.connect(plain_url(database_url))
    try:
        for function in citus.DELEGATED_FUNCTIONS:
            by = await connection.fetchval(
                "select distribution_argument_index from pg_dist_object "
                "where objid = $1::regprocedure",
                function,
            )
            assert by == 0, function
    finally:
        await connection.close()
    again = await citus.distribute_database(database_url)
    assert (again.reference, again.distributed, again.keys_restored) == ((), (), 0)


async def test_start_is_refused_where_the_tenant_would_not_reach_the_shards(
    citus_cluster: CitusCluster, database_url: str
) -> None:
    bare = await citus_cluster.create_database(f"tenantry_bare_{uuid.uuid4().hex[:8]}")
    (problem,) = await problems_of(bare)
    assert "citus.propagate_set_commands = 'local'" in problem
    assert "tenantry db distribute" in problem
    # Distributed, the database carries the setting.
    assert await problems_of(database_url) == []


async def problems_of(url: str) -> list[str]:
    engine = create_async_engine(make_url(url).set(drivername="postgresql+asyncpg"))
    try:
        return await citus.citus_problems(engine)
    finally:
        await engine.dispose()

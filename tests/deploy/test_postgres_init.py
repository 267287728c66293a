"""deploy/postgres/init-app-role.sh, compose's postgres-init, run by psql against a real
PostgreSQL 16 of its own (roles are cluster-wide: the suite's shared server is left alone)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from pgserver._commands import POSTGRES_BIN_PATH
from sqlalchemy.engine import make_url

from tenantry.infrastructure.db import migrations
from tenantry.infrastructure.db.rls import APP_ROLE, MAINTENANCE_ROLE
from tenantry.infrastructure.embedded import EmbeddedPostgres

from .stack import DEPLOY

SCRIPT = DEPLOY / "postgres" / "init-app-role.sh"
DATABASE = "tenantry"
# One worker starts the cluster once for all the module's cases.
pytestmark = pytest.mark.xdist_group("postgres_init")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    postgres = EmbeddedPostgres(tmp_path_factory.mktemp("postgres-init"))
    postgres.start()
    postgres.ensure_database(DATABASE)
    yield postgres
    postgres.stop()


@pytest.fixture
async def admin(server: EmbeddedPostgres) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(server.url(DATABASE))
    yield connection
    await connection.close()


def run_init(server: EmbeddedPostgres, password: str) -> subprocess.CompletedProcess[str]:
    """As compose runs it: psql's PG* variables and the password in APP_DB_PASSWORD."""
    url = make_url(server.url(DATABASE))
    environ = {
        "PATH": f"{POSTGRES_BIN_PATH}{os.pathsep}{os.environ['PATH']}",
        "PGHOST": str(url.query["host"]),
        "PGUSER": "postgres",
        "PGDATABASE": DATABASE,
        "APP_DB_PASSWORD": password,
    }
    return subprocess.run(["sh", str(SCRIPT)], env=environ, capture_output=True, text=True)


async def role(admin: asyncpg.Connection) -> asyncpg.Record:
    found = await admin.fetchrow(
        "select rolcanlogin, rolsuper, rolbypassrls, rolcreatedb, rolcreaterole, rolpassword "
        "from pg_authid where rolname = $1",
        APP_ROLE,
    )
    assert found is not None, f"no role {APP_ROLE}"
    return found


async def test_creates_the_app_role_with_its_password(
    server: EmbeddedPostgres, admin: asyncpg.Connection
) -> None:
    result = run_init(server, "first-password")
    assert result.returncode == 0, result.stderr
    made = await role(admin)
    assert made["rolcanlogin"]
    assert not made["rolsuper"]
    assert not made["rolbypassrls"]
    assert not made["rolcreatedb"]
    assert not made["rolcreaterole"]
    assert made["rolpassword"].startswith("SCRAM-SHA-256$")
    assert "first-password" not in result.stdout + result.stderr


async def test_runs_again_and_applies_a_new_password(
    server: EmbeddedPostgres, admin: asyncpg.Connection
) -> None:
    assert run_init(server, "first-password").returncode == 0
    before = (await role(admin))["rolpassword"]
    again = run_init(server, "second-password")
    assert again.returncode == 0, again.stderr
    assert (await role(admin))["rolpassword"] != before


async def test_the_migrations_take_the_role_as_it_is_and_grant_it_the_tables(
    server: EmbeddedPostgres, admin: asyncpg.Connection
) -> None:
    assert run_init(server, "app-password").returncode == 0
    password = (await role(admin))["rolpassword"]
    # alembic runs its own event loop: off this one.
    await asyncio.to_thread(migrations.upgrade, server.url(DATABASE))
    after = await role(admin)
    assert after["rolpassword"] == password
    assert not after["rolsuper"]
    assert not after["rolbypassrls"]
    assert await admin.fetchval("select has_table_privilege($1, 'tenants', 'SELECT')", APP_ROLE)
    owners = await admin.fetchval(
        "select count(*) from pg_tables where schemaname = 'public' and tableowner = $1", APP_ROLE
    )
    assert owners == 0


async def test_an_owner_that_is_no_superuser_migrates_and_hands_the_sweeps_over(
    server: EmbeddedPostgres, admin: asyncpg.Connection
) -> None:
    """As on a managed server: the owner has CREATEROLE and owns its database, no more."""
    owner, database = "tenantry_owner", "tenantry_owned"
    await admin.execute(f"create role {owner} login createrole")
    await admin.execute(f"create database {database} owner {owner}")
    # A maintenance role made by another owner first (another test of this cluster, maybe)
    # needs what its maker got by making it; docs/operations.md gives the operator this line.
    if await admin.fetchval("select 1 from pg_roles where rolname = $1", MAINTENANCE_ROLE):
        await admin.execute(
            f"grant {MAINTENANCE_ROLE} to {owner} with admin option, inherit false, set false"
        )
    await asyncio.to_thread(migrations.upgrade, server.url(database, user=owner))
    owned = await asyncpg.connect(server.url(database))
    try:
        owners = await owned.fetch(
            "select pg_get_userbyid(proowner) as owner from pg_proc "
            "where pronamespace = 'public'::regnamespace and prosecdef"
        )
        assert [row["owner"] for row in owners] == [MAINTENANCE_ROLE] * 8
        # What the hand-over lent for a moment is taken back.
        assert not await owned.fetchval(
            "select pg_has_role($1, $2, 'SET') or pg_has_role($1, $2, 'USAGE') "
            "or has_schema_privilege($2, 'public', 'CREATE')",
            owner,
            MAINTENANCE_ROLE,
        )
    finally:
        await owned.close()

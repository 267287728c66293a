"""Migrations run the real path: upgrade, downgrade to base, upgrade again; and with rows in
the tables, where a migration moves data."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from tenantry.config import load_settings
from tenantry.infrastructure.db import migrations
from tenantry.infrastructure.db.features import metadata

from ..conftest import create_database, drop_database, plain_url
from .test_rls import Seeder, insert_statement, tenant_tables
from .test_tenant_keys import catalog_key_problems


@pytest.fixture
async def empty_database(admin_database_url: str) -> AsyncIterator[str]:
    name = f"tenantry_migrate_{uuid.uuid4().hex[:12]}"
    url = await create_database(admin_database_url, name)
    yield url
    await drop_database(admin_database_url, name)


async def tables(url: str) -> set[str]:
    connection = await asyncpg.connect(plain_url(url))
    try:
        rows = await connection.fetch("select tablename from pg_tables where schemaname = 'public'")
    finally:
        await connection.close()
    return {row["tablename"] for row in rows}


async def test_upgrade_downgrade_upgrade(empty_database: str) -> None:
    await asyncio.to_thread(migrations.upgrade, empty_database)
    assert "tenants" in await tables(empty_database)
    head = await asyncio.to_thread(migrations.current, empty_database)
    assert "(head)" in head

    await asyncio.to_thread(migrations.downgrade, empty_database, "base")
    assert await tables(empty_database) <= {"alembic_version"}
    assert await asyncio.to_thread(migrations.current, empty_database) == ""

    await asyncio.to_thread(migrations.upgrade, empty_database)
    assert await asyncio.to_thread(migrations.current, empty_database) == head


async def test_models_match_the_migrations(database_url: str) -> None:
    """Autogenerate finds nothing to change: the models and the migrated schema agree."""
    engine = create_async_engine(
        load_settings(environ={}, env_file=None, database_url=database_url).async_database_url
    )
    try:
        async with engine.connect() as connection:
            diff = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
    finally:
        await engine.dispose()
    assert diff == []


# Every constraint and index of schema public: name -> (kind, definition).
SCHEMA = """
    select conrelid::regclass::text || '.' || conname as name, contype::text as kind,
      pg_get_constraintdef(oid) as definition
    from pg_constraint where connamespace = 'public'::regnamespace
    union all
    select tablename || '.' || indexname, 'i', indexdef from pg_indexes where schemaname = 'public'
"""


async def schema(connection: asyncpg.Connection) -> dict[str, tuple[str, str]]:
    return {row["name"]: (row["kind"], row["definition"]) for row in await connection.fetch(SCHEMA)}


async def stored(
    connection: asyncpg.Connection, seeded: Mapping[str, list[dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """The rows of each table in ``seeded``, on the columns they were seeded with (a later
    migration may add some)."""
    found = {}
    for table, rows in seeded.items():
        columns = rows[0].keys()
        found[table] = [
            {column: row[column] for column in columns}
            for row in await connection.fetch(f'select * from "{table}" order by id')
        ]
    return found


async def refusal(
    connection: asyncpg.Connection, table: str, values: Mapping[str, Any]
) -> asyncpg.PostgresError | None:
    statement, args = insert_statement(table, values)
    try:
        async with connection.transaction():  # a savepoint: a refusal leaves the rest usable
            await connection.execute(statement, *args)
    except asyncpg.PostgresError as error:
        return error
    return None


async def key_violations(
    connection: asyncpg.Connection, seeder: Seeder, a: uuid.UUID, b: uuid.UUID
) -> list[str]:
    """Probes of the keys of each tenant table, rolled back: A's id again in A is refused by the
    primary key, and taken in B; a row of A naming B's row in a reference is refused by it."""
    problems = []
    transaction = connection.transaction()
    await transaction.start()
    try:
        for table in seeder.tables:
            taken = seeder.rows[table][a]["id"]
            error = await refusal(connection, table, {**seeder.values(table, a), "id": taken})
            if getattr(error, "constraint_name", None) != f"pk_{table}":
                problems.append(f"{table}: A's id again in A: {error!r}")
            error = await refusal(connection, table, {**seeder.values(table, b), "id": taken})
            if error is not None:
                problems.append(f"{table}: A's id in B: {error!r}")
            for key in seeder.keys[table]:
                if key["parent"] == "tenants":
                    continue
                values = seeder.values(table, a)
                theirs = seeder.rows[key["parent"]][b]
                for column, referenced in zip(key["columns"], key["referenced"], strict=True):
                    if column != "tenant_id":
                        values[column] = theirs[referenced]
                error = await refusal(connection, table, values)
                if getattr(error, "constraint_name", None) != key["name"]:
                    problems.append(f"{table}: {key['name']} to B's row: {error!r}")
    finally:
        await transaction.rollback()
    return problems


async def test_tenant_keys_migrate_with_rows_up_and_down(empty_database: str) -> None:
    """0008_tenant_keys on a database with rows: two tenants, each with a row in every tenant
    table (user, refresh token, API key, project, document, file, task, task log) pointing at
    its own tenant's rows. Up, the rows stay and every key leads with tenant_id; down, the rows
    stay and the schema is 0007's again."""
    await asyncio.to_thread(migrations.upgrade, empty_database, "0007_ownership")
    connection = await asyncpg.connect(plain_url(empty_database))
    try:
        tables = await tenant_tables(connection)
        seeder = Seeder(connection, tables)
        a, b = uuid.uuid4(), uuid.uuid4()
        await seeder.seed([a, b])
        seeded = {
            table: sorted(by_tenant.values(), key=lambda row: row["id"])
            for table, by_tenant in seeder.rows.items()
        }
        assert {table for table, rows in seeded.items() if len(rows) == 2} >= {
            "tenants",
            "users",
            "refresh_tokens",
            "api_keys",
            "projects",
            "documents",
            "files",
            "tasks",
            "task_logs",
        }
        before = await schema(connection)
        # The checker sees 0007's keys for what they are.
        assert await catalog_key_problems(connection) == [
            f"{table}: primary key ['id'], not ['tenant_id', 'id']" for table in sorted(tables)
        ]
    finally:
        await connection.close()

    await asyncio.to_thread(migrations.upgrade, empty_database)
    connection = await asyncpg.connect(plain_url(empty_database))
    try:
        assert await stored(connection, seeded) == seeded
        assert await catalog_key_problems(connection) == []
        # The same keys, but those 0020_citus_forms made plain (Citus refuses SET NULL of one
        # column): deleting a user clears those columns instead.
        references = {
            name: (kind, re.sub(r" ON DELETE SET NULL \(\w+\)$", "", definition))
            for name, (kind, definition) in before.items()
            if kind == "f"
        }
        after = await schema(connection)
        assert {name: after.get(name) for name in references} == references
        assert await key_violations(connection, seeder, a, b) == []
    finally:
        await connection.close()

    await asyncio.to_thread(migrations.downgrade, empty_database, "0007_ownership")
    connection = await asyncpg.connect(plain_url(empty_database))
    try:
        assert await stored(connection, seeded) == seeded
        assert await schema(connection) == before
    finally:
        await connection.close()

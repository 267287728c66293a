"""The tenant tables as the database lists them, read as the app role: the list that export and
erasure walk, so a table missing from it would be a tenant's data left behind."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from tenantry.config import Settings
from tenantry.infrastructure.db.catalog import tenant_tables
from tenantry.infrastructure.db.features import metadata
from tenantry.infrastructure.db.users import MADE_BY

from .test_rls import FOREIGN_KEYS, TENANT_TABLES


@pytest.fixture
async def app_connection(settings: Settings) -> AsyncIterator[AsyncConnection]:
    engine = create_async_engine(settings.async_database_url)
    async with engine.connect() as connection:
        yield connection
    await engine.dispose()


async def test_every_table_with_a_tenant_is_listed_with_its_columns(
    app_connection: AsyncConnection, database_owner: asyncpg.Connection
) -> None:
    tables = {table.name: table for table in await tenant_tables(app_connection)}
    assert set(tables) == {row["relname"] for row in await database_owner.fetch(TENANT_TABLES)}
    for name, table in tables.items():
        assert set(table.columns) == set(metadata.tables[name].columns.keys()), name
    assert "tenants" not in tables


async def test_a_table_comes_after_every_tenant_table_it_refers_to(
    app_connection: AsyncConnection, database_owner: asyncpg.Connection
) -> None:
    order = [table.name for table in await tenant_tables(app_connection)]
    for key in await database_owner.fetch(FOREIGN_KEYS):
        child, parent = key["child"], key["parent"]
        if child != parent and {child, parent} <= set(order):
            assert order.index(parent) < order.index(child), (child, parent)
    assert order == [table.name for table in await tenant_tables(app_connection)]


async def test_deleting_a_user_clears_every_key_that_names_them(
    database_owner: asyncpg.Connection,
) -> None:
    keys = await database_owner.fetch(
        """
        select k.conrelid::regclass::text as child, a.attname as column, k.confdeltype::text as action
        from pg_constraint k
        join pg_attribute a on a.attrelid = k.conrelid and a.attnum = k.conkey[2]
        where k.contype = 'f' and k.confrelid = 'users'::regclass
        """
    )
    # Kept rows name their maker in a column the deletion clears; the others go with the user.
    kept = {(key["child"], key["column"]) for key in keys if key["action"] != "c"}
    assert kept == set(MADE_BY.items())

"""Migrations run the real path: upgrade, downgrade to base, upgrade again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from tenantry.config import load_settings
from tenantry.infrastructure.db import migrations
from tenantry.infrastructure.db.models import metadata

from ..conftest import create_database, drop_database, plain_url


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

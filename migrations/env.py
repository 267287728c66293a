"""Alembic environment: async engine on asyncpg, the models' metadata as the target."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from tenantry.config import load_settings
from tenantry.infrastructure.db.features import metadata

config = context.config


def database_url() -> str:
    url = config.attributes.get("database_url") or load_settings().migration_url
    return load_settings(environ={}, env_file=None, database_url=url).async_database_url


def run_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def migrate(connection: Connection) -> None:
    # On a Citus coordinator (docs/scaling.md), a migration's transaction may change distributed
    # tables and then functions, which Citus allows over one connection per worker only.
    if connection.execute(text("select 1 from pg_extension where extname = 'citus'")).first():
        connection.execute(text("SET citus.multi_shard_modify_mode TO 'sequential'"))
    connection.commit()
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_online() -> None:
    engine = create_async_engine(database_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(migrate)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    asyncio.run(run_online())

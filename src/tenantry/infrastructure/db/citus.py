"""Tenantry on a Citus cluster: the schema distributed by tenant (``tenantry db distribute``).

``tenants`` becomes a reference table (a copy on every node) and every tenant table (each table
with a ``tenant_id``, found in the catalog) is distributed by ``tenant_id``, all colocated: one
tenant's rows of every table live in one shard group on one worker, so a tenant's statement,
joins and foreign keys included, runs on that worker alone.

The foreign keys of the tables it changes are dropped while they are, and made again after, all
in one transaction: a failure leaves the schema as it was.
"""

from __future__ import annotations

import msgspec
from sqlalchemy import Connection, make_url, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from tenantry.infrastructure.db.catalog import tenant_tables
from tenantry.infrastructure.db.rls import MAINTENANCE_ROLE

TENANTS = "tenants"
# Whether the server is a Citus node: asked by a migration and by each new connection.
CITUS_INSTALLED = "SELECT exists (SELECT FROM pg_extension WHERE extname = 'citus')"
# Functions that name their tenant in their first argument and read that tenant's rows alone,
# called outside a transaction: distributed, Citus runs each call on the worker holding the
# tenant's shards, where the tenant they set holds for their statements. (On the coordinator
# the SET LOCAL of a lone statement's function does not reach the shards.)
DELEGATED_FUNCTIONS = (
    "tenantry_user_by_login(uuid, text)",
    "tenantry_start_session(uuid, uuid, uuid, uuid, text, timestamptz, timestamptz)",
)
# Without it a SET LOCAL on the coordinator stays there, and the shards' row level security,
# on the workers, sees no tenant.
PROPAGATE_SET = ("citus.propagate_set_commands", "local")


class CitusMissing(RuntimeError):
    """The database has no Citus extension."""


class Distribution(msgspec.Struct, frozen=True):
    citus: str
    reference: tuple[str, ...]
    distributed: tuple[str, ...]
    keys_restored: int


async def citus_version(connection: AsyncConnection) -> str | None:
    version = await connection.scalar(
        text("select extversion from pg_extension where extname = 'citus'")
    )
    return None if version is None else str(version)


async def citus_problems(engine: AsyncEngine) -> list[str]:
    """What keeps row level security from holding on a Citus coordinator, if it is one: the
    tenant the app sets with SET LOCAL reaches the workers' shards only when Citus propagates
    it (``tenantry db distribute`` sets that for the database)."""
    setting, wanted = PROPAGATE_SET
    async with engine.connect() as connection:
        version = await citus_version(connection)
        if version is None:
            return []
        propagate = await connection.scalar(text(f"select current_setting('{setting}', true)"))
    if propagate == wanted:
        return []
    return [
        f"Citus {version} without {setting} = '{wanted}' (it is {propagate!r}): run "
        f"`tenantry db distribute`, or ALTER DATABASE ... SET {setting} = '{wanted}'"
    ]


_PARTITIONED = text(
    "select logicalrelid::regclass::text as name, partmethod::text from pg_dist_partition"
)
# Every foreign key of the schema's tables, shards left out (Citus keeps those of local tables on
# the coordinator).
_KEYS = text(
    """
    select k.conrelid::regclass::text as child, k.confrelid::regclass::text as parent,
           k.conname as name, pg_get_constraintdef(k.oid) as definition
    from pg_constraint k
    where k.contype = 'f' and k.connamespace = current_schema()::regnamespace
      and citus_table_is_visible(k.conrelid)
    order by 1, 3
    """
)


async def distribute(connection: AsyncConnection, database: str) -> Distribution:
    """Distribute the schema (idempotent: what is distributed already is left as it is), in
    the connection's transaction, which the caller commits."""
    version = await citus_version(connection)
    if version is None:
        raise CitusMissing(
            "this database has no Citus extension: install Citus on every node "
            "(deploy/citus/build.sh), then CREATE EXTENSION citus here and on each worker, and "
            "add the workers (SELECT citus_add_node(host, port)); see docs/scaling.md"
        )
    # create_distributed_table in a transaction that has already written: one connection per
    # worker, not one per shard.
    await connection.execute(text("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'"))
    done = {row.name: row.partmethod for row in (await connection.execute(_PARTITIONED)).all()}
    tables = [table.name for table in await tenant_tables(connection)]
    pending = [name for name in tables if done.get(name) != "h"]
    reference = [] if done.get(TENANTS) == "n" else [TENANTS]
    # Every key to or from a table about to change is dropped first and made again after: with a
    # key to a local tenants, making tenants a reference table would turn the tenant tables
    # into Citus local tables, which Citus rebuilds, dropping the functions that return their
    # rows; and a distributed table may not refer to a local one, nor a local one to it.
    changing = {*pending, *reference}
    keys = [
        key
        for key in (await connection.execute(_KEYS)).all()
        if key.child in changing or key.parent in changing
    ]
    for key in keys:
        await connection.execute(text(f'ALTER TABLE {key.child} DROP CONSTRAINT "{key.name}"'))
    for name in reference:
        await connection.execute(text(f"SELECT create_reference_table('{name}')"))
    anchor = next((name for name in tables if done.get(name) == "h"), None)
    for name in pending:
        colocate = "'default'" if anchor is None else f"'{anchor}'"
        await connection.execute(
            text(
                f"SELECT create_distributed_table('{name}', 'tenant_id', "
                f"colocate_with => {colocate})"
            )
        )
        anchor = anchor or name
    for key in keys:
        await connection.execute(
            text(f'ALTER TABLE {key.child} ADD CONSTRAINT "{key.name}" {key.definition}')
        )
    for function in DELEGATED_FUNCTIONS:
        await connection.execute(text(delegate(function)))
    setting, value = PROPAGATE_SET
    await connection.execute(text(f"ALTER DATABASE \"{database}\" SET {setting} = '{value}'"))
    # The maintenance functions run as their owner, so Citus reaches the workers as that role.
    await connection.execute(text(f"ALTER ROLE {MAINTENANCE_ROLE} LOGIN"))
    return Distribution(
        citus=version,
        reference=tuple(reference),
        distributed=tuple(pending),
        keys_restored=len(keys),
    )


def delegate(function: str) -> str:
    """The statement distributing ``function`` (its first argument a tenant) with the tenant
    tables (idempotent)."""
    return f"SELECT create_distributed_function('{function}', '$1', colocate_with => 'users')"


def users_distributed(connection: Connection) -> bool:
    """Whether ``users`` is distributed already (a Citus coordinator after `tenantry db
    distribute`): a migration that adds one of ``DELEGATED_FUNCTIONS`` distributes it itself."""
    if connection.execute(text(CITUS_INSTALLED)).scalar():
        distributed = text("select 1 from pg_dist_partition where logicalrelid = 'users'::regclass")
        return connection.execute(distributed).first() is not None
    return False


async def distribute_database(url: str) -> Distribution:
    """The database at ``url`` (its owner's or a superuser's URL) distributed, in one
    transaction."""
    target = make_url(url)
    engine = create_async_engine(target.set(drivername="postgresql+asyncpg"))
    try:
        async with engine.begin() as connection:
            return await distribute(connection, target.database or "postgres")
    finally:
        await engine.dispose()

"""The tenant tables as the database itself lists them: every table of the schema with a
``tenant_id`` column. What must reach every row of a tenant (its export, its erasure) reads
this list rather than one written by hand, so a new feature's table is included the day its
migration creates it."""

from __future__ import annotations

from graphlib import TopologicalSorter

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

_TABLES = """
    select c.relname as name,
      array(select a.attname from pg_attribute a
            where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
            order by a.attnum) as columns
    from pg_class c
    join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = current_schema() and c.relkind in ('r', 'p') and not c.relispartition
      and exists (select from pg_attribute t
                  where t.attrelid = c.oid and t.attname = 'tenant_id' and not t.attisdropped)
    """
# A Citus node holding shards lists them in pg_class beside their tables, with the same
# columns. The app's connections are shown them (database.alchemy_config says why), so they
# are left out by Citus's own test of a shard rather than by its hiding.
_CITUS = text(
    "select to_regprocedure('pg_catalog.relation_is_a_known_shard(regclass)') is not null"
)
_TABLES_OF_ONE_NODE = text(_TABLES)
_TABLES_OF_CITUS = text(_TABLES + "  and not pg_catalog.relation_is_a_known_shard(c.oid)\n")
# Which tenant table refers to which (self-references left out: they order nothing).
_REFERENCES = text(
    """
    select distinct child.relname as child, parent.relname as parent
    from pg_constraint k
    join pg_class child on child.oid = k.conrelid
    join pg_class parent on parent.oid = k.confrelid
    where k.contype = 'f' and k.connamespace = current_schema()::regnamespace
      and k.conrelid <> k.confrelid
    """
)


class TenantTable(msgspec.Struct, frozen=True):
    name: str
    # In the table's order.
    columns: tuple[str, ...]


async def tenant_tables(db: AsyncConnection | AsyncSession) -> list[TenantTable]:
    """Every tenant table, each after the tenant tables it refers to: insert in this order,
    delete in the reverse one. ``tenants`` itself has no ``tenant_id`` and is not listed."""
    listing = _TABLES_OF_CITUS if await db.scalar(_CITUS) else _TABLES_OF_ONE_NODE
    tables = {
        row.name: TenantTable(row.name, tuple(row.columns))
        for row in (await db.execute(listing)).all()
    }
    graph: dict[str, set[str]] = {name: set() for name in tables}
    for row in (await db.execute(_REFERENCES)).all():
        if row.child in tables and row.parent in tables:
            graph[row.child].add(row.parent)
    # Sorted first: the same schema lists its tables in the same order every time.
    ordered = TopologicalSorter({name: sorted(graph[name]) for name in sorted(graph)})
    return [tables[name] for name in ordered.static_order()]

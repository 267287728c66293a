"""Every key of a tenant table carries tenant_id, read from the catalog: the schema stays
distributable by tenant (Citus wants the distribution column in every primary key, unique key
and foreign key between distributed tables), and no key spans tenants. A table added later with
a ``tenant_id`` is covered without editing this file."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import asyncpg

from .test_rls import FOREIGN_KEYS, tenant_tables

TENANT_KEY = ["tenant_id", "id"]

# Primary keys and unique indexes (constraints or not) of schema public, with their key columns
# in order: NULL for an expression, INCLUDE columns left out (they make nothing unique).
UNIQUE_INDEXES = """
    select t.relname as table, x.relname as name, i.indisprimary as primary,
      array(select a.attname from unnest(i.indkey) with ordinality k(num, n)
            left join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.num
            where k.n <= i.indnkeyatts order by k.n) as columns
    from pg_index i
    join pg_class x on x.oid = i.indexrelid
    join pg_class t on t.oid = i.indrelid
    where t.relnamespace = 'public'::regnamespace and i.indisunique
"""


def key_problems(
    tenant_tables: Iterable[str],
    indexes: Iterable[Mapping[str, Any]],
    foreign_keys: Iterable[Mapping[str, Any]],
) -> list[str]:
    """Given the catalog: a tenant table whose primary key is not (tenant_id, id), a unique
    index of a tenant table without tenant_id among its key columns, and a foreign key to a
    tenant table that does not match tenant_id with the referenced row's tenant_id."""
    tables = set(tenant_tables)
    problems, primary = [], {}
    for index in indexes:
        if index["table"] not in tables:
            continue
        if index["primary"]:
            primary[index["table"]] = list(index["columns"])
        elif "tenant_id" not in index["columns"]:
            problems.append(
                f"{index['table']}: {index['name']} on {index['columns']} spans tenants"
            )
    for table in sorted(tables):
        if primary.get(table) != TENANT_KEY:
            problems.append(f"{table}: primary key {primary.get(table)}, not {TENANT_KEY}")
    for key in foreign_keys:
        pairs = list(zip(key["columns"], key["referenced"], strict=True))
        if key["parent"] in tables and ("tenant_id", "tenant_id") not in pairs:
            problems.append(
                f"{key['child']}: {key['name']} {key['columns']} -> "
                f"{key['parent']} {key['referenced']} can point at another tenant's row"
            )
    return problems


async def catalog_key_problems(connection: asyncpg.Connection) -> list[str]:
    tables = await tenant_tables(connection)
    indexes = await connection.fetch(UNIQUE_INDEXES)
    foreign_keys = await connection.fetch(FOREIGN_KEYS)
    # A floor, so that a query come back short does not pass for a clean schema.
    assert {index["table"] for index in indexes if index["primary"]} >= set(tables)
    assert {(key["child"], key["parent"]) for key in foreign_keys} >= {
        ("documents", "projects"),
        ("task_logs", "tasks"),
        ("api_keys", "users"),
    }
    return key_problems(tables, indexes, foreign_keys)


async def test_every_key_of_a_tenant_table_carries_tenant_id(
    database_owner: asyncpg.Connection,
) -> None:
    problems = await catalog_key_problems(database_owner)
    assert not problems, "\n".join(problems)


def test_key_problems_flag_keys_that_leave_tenant_id_out() -> None:
    def index(table: str, name: str, columns: list[str | None], *, primary: bool = False) -> Any:
        return {"table": table, "name": name, "primary": primary, "columns": columns}

    def key(child: str, columns: list[str], parent: str, referenced: list[str]) -> Any:
        name = f"fk_{child}_{columns[0]}_{parent}"
        return {
            "name": name,
            "child": child,
            "columns": columns,
            "parent": parent,
            "referenced": referenced,
        }

    tables = ["users", "documents"]
    good_indexes = [
        index("tenants", "pk_tenants", ["id"], primary=True),
        index("tenants", "uq_tenants_slug", ["slug"]),
        index("users", "pk_users", TENANT_KEY, primary=True),
        index("users", "uq_users_tenant_email", ["tenant_id", None]),
        index("documents", "pk_documents", TENANT_KEY, primary=True),
    ]
    good_keys = [
        key("users", ["tenant_id"], "tenants", ["id"]),
        key("documents", ["tenant_id", "created_by"], "users", TENANT_KEY),
    ]
    assert key_problems(tables, good_indexes, good_keys) == []

    bad_indexes = [
        index("users", "pk_users", ["id"], primary=True),
        index("users", "uq_users_email", [None]),
        index("documents", "pk_documents", ["id", "tenant_id"], primary=True),
    ]
    bad_keys = [
        # No tenant_id; tenant_id matched with another column; from a table without tenant_id.
        key("documents", ["created_by"], "users", ["id"]),
        key("documents", ["tenant_id", "created_by"], "users", ["id", "tenant_id"]),
        key("audit", ["user_id"], "users", ["id"]),
    ]
    assert key_problems(tables, bad_indexes, bad_keys) == [
        "users: uq_users_email on [None] spans tenants",
        "documents: primary key ['id', 'tenant_id'], not ['tenant_id', 'id']",
        "users: primary key ['id'], not ['tenant_id', 'id']",
        "documents: fk_documents_created_by_users ['created_by'] -> users ['id'] "
        "can point at another tenant's row",
        "documents: fk_documents_tenant_id_users ['tenant_id', 'created_by'] -> "
        "users ['id', 'tenant_id'] can point at another tenant's row",
        "audit: fk_audit_user_id_users ['user_id'] -> users ['id'] "
        "can point at another tenant's row",
    ]
    assert key_problems(["files"], [], []) == ["files: primary key None, not ['tenant_id', 'id']"]

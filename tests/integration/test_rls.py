"""Wall 2 on every tenant table, found from the catalog: raw SQL as the app role, with no
repository filter in front, sees and changes only the rows of the tenant set for the
transaction. A table added later with a ``tenant_id`` is covered without editing this file.
Append-only tables (the app role holds no UPDATE or DELETE on them, found from the catalog too)
are held to what applies: their UPDATE and DELETE are refused by privilege, not by the policy.

Each test collects every problem before it asserts, so a broken build shows all it broke.
"""

from __future__ import annotations

import graphlib
import itertools
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tenantry.infrastructure.db.rls import APP_ROLE, MAINTENANCE_ROLE, POLICY, enable_tenant_rls

from ..conftest import plain_url

# How PostgreSQL deparses rls.TENANT_PREDICATE; pinned so that a weakened helper is noticed too.
DEPARSED_PREDICATE = (
    "(tenant_id = (NULLIF(current_setting('app.tenant_id'::text, true), ''::text))::uuid)"
)
RLS_REFUSAL = "new row violates row-level security policy"
PRIVILEGE_REFUSAL = "permission denied"
# What the app role may do on a tenant table: everything a row needs, or (append-only) no
# UPDATE or DELETE. TRUNCATE, which row level security does not hold, never.
FULL = {"SELECT", "INSERT", "UPDATE", "DELETE"}
APPEND_ONLY = {"SELECT", "INSERT"}
# The one policy besides the tenant's (migration 0009_task_sweeps): the maintenance role, which
# owns the sweep functions and which nobody logs in as or is a member of, sees the unfinished
# tasks of every tenant. Pinned as PostgreSQL deparses it: widening it must fail here.
SWEEP_POLICY = {
    "tablename": "tasks",
    "policyname": "task_sweeps",
    "permissive": "PERMISSIVE",
    "roles": [MAINTENANCE_ROLE],
    "cmd": "ALL",
    "qual": "((status)::text = ANY ((ARRAY['pending'::character varying, "
    "'processing'::character varying, 'failed'::character varying])::text[]))",
    "with_check": "((status)::text = ANY ((ARRAY['pending'::character varying, "
    "'failed'::character varying])::text[]))",
}
# And the platform's trail (migration 0018_platform_audit): the maintenance role, owner of the
# function that pages every tenant's events for superusers, may read them, and only read them.
AUDIT_READS_POLICY = {
    "tablename": "audit_events",
    "policyname": "audit_platform_reads",
    "permissive": "PERMISSIVE",
    "roles": [MAINTENANCE_ROLE],
    "cmd": "SELECT",
    "qual": "true",
    "with_check": None,
}
# And the webhook deliveries' claim and purge (migration 0019_webhooks): the maintenance role,
# owner of those two functions, reads every tenant's endpoints, and reads, leases (leaving
# them pending) and purges every tenant's deliveries; its column privileges hold what it may
# change.
WEBHOOK_DISPATCH_POLICIES = (
    {
        "tablename": "webhook_endpoints",
        "policyname": "webhook_dispatch",
        "permissive": "PERMISSIVE",
        "roles": [MAINTENANCE_ROLE],
        "cmd": "SELECT",
        "qual": "true",
        "with_check": None,
    },
    {
        "tablename": "webhook_deliveries",
        "policyname": "webhook_dispatch",
        "permissive": "PERMISSIVE",
        "roles": [MAINTENANCE_ROLE],
        "cmd": "ALL",
        "qual": "true",
        "with_check": "((status)::text = 'pending'::text)",
    },
)
MAINTENANCE_POLICIES = (SWEEP_POLICY, AUDIT_READS_POLICY, *WEBHOOK_DISPATCH_POLICIES)

TENANT_TABLES = """
    select c.relname from pg_class c
    join pg_namespace n on n.oid = c.relnamespace
    join pg_attribute a on a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped
    where n.nspname = 'public' and c.relkind in ('r', 'p') and c.relname <> 'tenants'
    order by 1
"""
PRIVILEGES = """
    select t.name, array(
        select p from unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE',
                                   'REFERENCES', 'TRIGGER']) p
        where has_table_privilege($2, format('public.%I', t.name), p)
    ) as privileges
    from unnest($1::text[]) t(name)
"""
COLUMNS = """
    select table_name, column_name, data_type, udt_name, character_maximum_length
    from information_schema.columns
    where table_schema = 'public' and table_name = any($1::text[])
      and is_nullable = 'NO' and column_default is null
      and is_identity = 'NO' and is_generated = 'NEVER'
"""
FOREIGN_KEYS = """
    select c.conname as name, child.relname as child, parent.relname as parent,
      array(select a.attname from unnest(c.conkey) with ordinality k(num, i)
            join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.num
            order by k.i) as columns,
      array(select a.attname from unnest(c.confkey) with ordinality k(num, i)
            join pg_attribute a on a.attrelid = c.confrelid and a.attnum = k.num
            order by k.i) as referenced
    from pg_constraint c
    join pg_class child on child.oid = c.conrelid
    join pg_class parent on parent.oid = c.confrelid
    where c.contype = 'f' and c.connamespace = 'public'::regnamespace
"""


# Distinct days: a day may be part of a unique key (a tenant's usage day).
DAYS = (date(2000, 1, 1) + timedelta(days=n) for n in itertools.count())


def sample(data_type: str, udt_name: str, max_length: int | None) -> Any:
    """A value of the column's type, for the columns a seeded row must fill."""
    if data_type == "ARRAY":
        return []
    if udt_name in ("varchar", "text", "bpchar"):
        return uuid.uuid4().hex[: max_length or 32]
    values: dict[str, Any] = {
        "uuid": uuid.uuid4(),
        "int2": 1,
        "int4": 1,
        "int8": 1,
        "numeric": 1,
        "float4": 1.0,
        "float8": 1.0,
        "bool": True,
        "timestamptz": datetime.now(UTC),
        "timestamp": datetime.now(UTC).replace(tzinfo=None),
        "date": next(DAYS),
        "json": "{}",
        "jsonb": "{}",
        "bytea": b"x",
    }
    if udt_name not in values:
        raise AssertionError(f"seeding does not know the type {udt_name}: teach sample() it")
    return values[udt_name]


class Seeder:
    """Inserts rows into any tenant table from the catalog alone: the NOT NULL columns without
    defaults get a value of their type, foreign keys point at the same tenant's parent rows."""

    def __init__(self, connection: asyncpg.Connection, tables: list[str]) -> None:
        self.connection = connection
        self.tables = tables
        self.rows: dict[str, dict[uuid.UUID, dict[str, Any]]] = defaultdict(dict)
        self.required: dict[str, list[asyncpg.Record]] = defaultdict(list)
        self.keys: dict[str, list[asyncpg.Record]] = defaultdict(list)

    async def seed(self, tenants: Iterable[uuid.UUID]) -> None:
        for column in await self.connection.fetch(COLUMNS, [*self.tables, "tenants"]):
            self.required[column["table_name"]].append(column)
        order = graphlib.TopologicalSorter({table: set() for table in self.tables})
        for key in await self.connection.fetch(FOREIGN_KEYS):
            if key["child"] in self.tables and key["child"] != key["parent"]:
                self.keys[key["child"]].append(key)
                if key["parent"] != "tenants":
                    order.add(key["child"], key["parent"])
        ordered = list(order.static_order())
        for tenant in tenants:
            tenant_row = self.filled("tenants", {"id": tenant, "slug": f"t-{tenant.hex[:12]}"})
            self.rows["tenants"][tenant] = dict(await self.insert("tenants", tenant_row))
            for table in ordered:
                values = self.values(table, tenant)
                self.rows[table][tenant] = dict(await self.insert(table, values))

    def values(self, table: str, tenant: uuid.UUID) -> dict[str, Any]:
        """A new row of ``table`` for ``tenant`` (fresh values at each call), its parents being
        the tenant's seeded rows."""
        values: dict[str, Any] = {"tenant_id": tenant}
        for key in self.keys[table]:
            parent = self.rows[key["parent"]][tenant]
            values.update(zip(key["columns"], (parent[c] for c in key["referenced"]), strict=True))
        return self.filled(table, values)

    def filled(self, table: str, values: dict[str, Any]) -> dict[str, Any]:
        for column in self.required[table]:
            if column["column_name"] not in values:
                values[column["column_name"]] = sample(
                    column["data_type"], column["udt_name"], column["character_maximum_length"]
                )
        return values

    async def insert(self, table: str, values: Mapping[str, Any]) -> asyncpg.Record:
        statement, args = insert_statement(table, values)
        row: asyncpg.Record = await self.connection.fetchrow(f"{statement} returning *", *args)
        return row


def insert_statement(table: str, values: Mapping[str, Any]) -> tuple[str, list[Any]]:
    columns = ", ".join(f'"{name}"' for name in values)
    params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    return f'insert into "{table}" ({columns}) values ({params})', list(values.values())


@pytest.fixture
async def app_role(app_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(plain_url(app_database_url))
    yield connection
    await connection.close()


async def tenant_tables(connection: asyncpg.Connection) -> list[str]:
    return [row["relname"] for row in await connection.fetch(TENANT_TABLES)]


async def app_privileges(connection: asyncpg.Connection, tables: list[str]) -> dict[str, set[str]]:
    rows = await connection.fetch(PRIVILEGES, tables, APP_ROLE)
    return {row["name"]: set(row["privileges"]) for row in rows}


async def append_only_tables(connection: asyncpg.Connection, tables: list[str]) -> set[str]:
    """The tenant tables the app role may read and add to but neither update nor delete from."""
    privileges = await app_privileges(connection, tables)
    return {table for table in tables if not privileges[table] & {"UPDATE", "DELETE"}}


async def test_the_catalog_finds_the_tenant_tables(database_owner: asyncpg.Connection) -> None:
    tables = await tenant_tables(database_owner)
    assert await append_only_tables(database_owner, tables) >= {"audit_events"}
    # A floor, not the list: the discovery itself must not silently come back short.
    assert set(tables) >= {
        "audit_events",
        "users",
        "api_keys",
        "refresh_tokens",
        "projects",
        "documents",
        "files",
        "tasks",
        "task_logs",
    }


async def test_the_app_role_may_change_every_tenant_table_or_only_append_to_it(
    database_owner: asyncpg.Connection,
) -> None:
    privileges = await app_privileges(database_owner, await tenant_tables(database_owner))
    odd = {table: found for table, found in privileges.items() if found not in (FULL, APPEND_ONLY)}
    assert odd == {}


async def test_the_app_role_sees_and_changes_only_the_tenant_set_for_it(
    database_owner: asyncpg.Connection, app_role: asyncpg.Connection
) -> None:
    tables = await tenant_tables(database_owner)
    append_only = await append_only_tables(database_owner, tables)
    seeder = Seeder(database_owner, tables)
    a, b = uuid.uuid4(), uuid.uuid4()
    await seeder.seed([a, b])
    problems: list[str] = []

    # No tenant: never set on this connection (NULL), then after a SET LOCAL ended ('').
    await nothing_visible(app_role, tables, append_only, "no tenant set", problems)
    async with app_role.transaction():
        await app_role.execute(f"SET LOCAL app.tenant_id = '{a}'")
    assert await app_role.fetchval("select current_setting('app.tenant_id', true)") == ""
    await nothing_visible(app_role, tables, append_only, "after SET LOCAL ended", problems)

    for table in tables:
        transaction = app_role.transaction()
        await transaction.start()
        try:
            await app_role.execute(f"SET LOCAL app.tenant_id = '{a}'")
            seen = await app_role.fetch(
                f'select tenant_id, count(*) from "{table}" group by tenant_id'
            )
            if {row["tenant_id"]: row["count"] for row in seen} != {a: 1}:
                problems.append(f"{table}: tenant A sees {[tuple(row) for row in seen]}")
            insert, args = insert_statement(table, seeder.values(table, b))
            await refused(app_role, f"{table}: insert into B", insert, args, problems)
            changes = {
                "update B's rows": (
                    f'update "{table}" set tenant_id = tenant_id where tenant_id = $1',
                    [b],
                ),
                "delete B's rows": (f'delete from "{table}" where tenant_id = $1', [b]),
                "update every row it sees": (f'update "{table}" set tenant_id = tenant_id', []),
                "move A's row to B": (f'update "{table}" set tenant_id = $1', [b]),
                "delete every row it sees": (f'delete from "{table}"', []),
            }
            if table in append_only:
                for what, (sql, args) in changes.items():
                    await denied(app_role, f"{table}: tenant A's {what}", sql, args, problems)
                continue
            for what in ("update B's rows", "delete B's rows"):
                sql, args = changes[what]
                status = await app_role.execute(sql, *args)
                if not status.endswith(" 0"):
                    problems.append(f"{table}: tenant A's {what}: {status}")
            sql, args = changes["update every row it sees"]
            own = await app_role.execute(sql, *args)
            if own != "UPDATE 1":
                problems.append(f"{table}: tenant A's update of every row it sees: {own}")
            move, args = changes["move A's row to B"]
            await refused(app_role, f"{table}: move A's row to B", move, args, problems)
        finally:
            await transaction.rollback()
    assert not problems, "\n".join(problems)
    # Nothing above changed a row: the owner still sees each seeded row once.
    for table in tables:
        count = await database_owner.fetchval(f'select count(*) from "{table}"')
        assert count == 2, table


async def nothing_visible(
    connection: asyncpg.Connection,
    tables: list[str],
    append_only: set[str],
    when: str,
    problems: list[str],
) -> None:
    transaction = connection.transaction()
    await transaction.start()
    try:
        for table in tables:
            count = await connection.fetchval(f'select count(*) from "{table}"')
            update = f'update "{table}" set tenant_id = tenant_id'
            delete = f'delete from "{table}"'
            if table in append_only:
                if count != 0:
                    problems.append(f"{table}, {when}: sees {count}")
                for sql in (update, delete):
                    await denied(connection, f"{table}, {when}: {sql}", sql, [], problems)
                continue
            updated = await connection.execute(update)
            deleted = await connection.execute(delete)
            if (count, updated, deleted) != (0, "UPDATE 0", "DELETE 0"):
                problems.append(f"{table}, {when}: sees {count}, {updated}, {deleted}")
    finally:
        await transaction.rollback()


async def refused(
    connection: asyncpg.Connection,
    what: str,
    sql: str,
    args: list[Any],
    problems: list[str],
    *,
    by: str = RLS_REFUSAL,
) -> None:
    """The statement must fail with ``by`` (the policy's WITH CHECK unless told otherwise, as
    :func:`denied` tells the missing privilege), not on anything else."""
    try:
        # A savepoint: the refusal leaves the surrounding transaction usable.
        async with connection.transaction():
            await connection.execute(sql, *args)
    except asyncpg.PostgresError as error:
        if error.sqlstate != "42501" or by not in str(error):
            problems.append(f"{what}: failed with {error.sqlstate} {error}, not {by!r}")
    else:
        problems.append(f"{what}: allowed")


async def denied(
    connection: asyncpg.Connection, what: str, sql: str, args: list[Any], problems: list[str]
) -> None:
    """The statement must fail for want of the privilege, not on the policy."""
    await refused(connection, what, sql, args, problems, by=PRIVILEGE_REFUSAL)


def policy_problems(
    tenant_tables: Iterable[str], policies: Iterable[Mapping[str, Any]], predicate: str
) -> list[str]:
    """Given the catalog's policies in schema public: anything but exactly one tenant policy,
    permissive, for all commands and roles, with the predicate as USING and WITH CHECK, on
    each tenant table, and no other policy anywhere but ``MAINTENANCE_POLICIES`` (an extra
    permissive policy is OR-ed in and opens the table)."""
    expected = {
        "policyname": POLICY,
        "permissive": "PERMISSIVE",
        "roles": ["public"],
        "cmd": "ALL",
        "qual": normalized(predicate),
        "with_check": normalized(predicate),
    }
    tables = set(tenant_tables)
    problems, found = [], defaultdict(list)
    for policy in policies:
        found[policy["tablename"]].append(policy)
    for table in sorted(tables | set(found)):
        matching = 0
        for policy in found[table]:
            actual = {
                field: normalized(policy[field])
                if field in ("qual", "with_check")
                else policy[field]
                for field in expected
            }
            if table in tables and actual == expected:
                matching += 1
            elif {"tablename": table, **actual} not in [
                normalized_policy(policy) for policy in MAINTENANCE_POLICIES
            ]:
                problems.append(f"{table}: unexpected policy {actual}")
        if table in tables and matching != 1:
            problems.append(f"{table}: {matching} tenant policies, not 1")
    return problems


def normalized_policy(policy: Mapping[str, Any]) -> dict[str, Any]:
    return {
        field: normalized(value) if field in ("qual", "with_check") else value
        for field, value in policy.items()
    }


def normalized(expression: str | None) -> str | None:
    return None if expression is None else " ".join(expression.split())


async def expected_predicate(database_owner: asyncpg.Connection) -> str:
    """The predicate as PostgreSQL deparses it, read from a scratch table made with the
    migrations' own helper and dropped again."""
    transaction = database_owner.transaction()
    await transaction.start()
    try:
        await database_owner.execute("create temporary table rls_probe (tenant_id uuid)")
        for statement in enable_tenant_rls("rls_probe"):
            await database_owner.execute(statement)
        probe = await database_owner.fetchrow(
            "select qual, with_check from pg_policies where tablename = 'rls_probe'"
        )
    finally:
        await transaction.rollback()
    assert probe["qual"] == probe["with_check"]
    qual: str = probe["qual"]
    return qual


async def test_every_tenant_table_has_exactly_the_tenant_policy_forced(
    database_owner: asyncpg.Connection,
) -> None:
    tables = await tenant_tables(database_owner)
    predicate = await expected_predicate(database_owner)
    assert predicate == DEPARSED_PREDICATE
    policies = await database_owner.fetch("select * from pg_policies where schemaname = 'public'")
    problems = policy_problems(tables, policies, predicate)
    for row in await database_owner.fetch(
        "select relname, relrowsecurity, relforcerowsecurity from pg_class "
        "where relnamespace = 'public'::regnamespace and relname = any($1::text[])",
        tables,
    ):
        if not (row["relrowsecurity"] and row["relforcerowsecurity"]):
            problems.append(f"{row['relname']}: {dict(row)}")
    assert not problems, "\n".join(problems)


async def test_the_app_role_owns_nothing_and_bypasses_nothing(
    database_owner: asyncpg.Connection,
) -> None:
    role = await database_owner.fetchrow(
        "select oid, rolsuper, rolbypassrls from pg_roles where rolname = $1", APP_ROLE
    )
    assert (role["rolsuper"], role["rolbypassrls"]) == (False, False)
    owned = await database_owner.fetch(
        """
        select 'relation ' || relname as object from pg_class where relowner = $1
        union all select 'function ' || proname from pg_proc where proowner = $1
        union all select 'schema ' || nspname from pg_namespace where nspowner = $1
        union all select 'type ' || typname from pg_type where typowner = $1
        union all select 'database ' || datname from pg_database
          where datdba = $1 and datname = current_database()
        """,
        role["oid"],
    )
    assert [row["object"] for row in owned] == []
    # Owners bypass RLS without FORCE, and membership in the owner's role counts as owning.
    inherited = await database_owner.fetch(
        "select relname from pg_class where relname = any($1::text[]) "
        "and relnamespace = 'public'::regnamespace and pg_has_role($2, relowner, 'USAGE')",
        await tenant_tables(database_owner),
        APP_ROLE,
    )
    assert [row["relname"] for row in inherited] == []


def test_policy_problems_flag_an_added_permissive_policy() -> None:
    tenant_policy = {
        "policyname": POLICY,
        "permissive": "PERMISSIVE",
        "roles": ["public"],
        "cmd": "ALL",
        "qual": DEPARSED_PREDICATE,
        "with_check": DEPARSED_PREDICATE,
    }
    catalog = [{"tablename": t, **tenant_policy} for t in ("projects", "documents")]
    assert policy_problems(["projects", "documents"], catalog, DEPARSED_PREDICATE) == []
    leak = {
        "tablename": "projects",
        "policyname": "leak",
        "permissive": "PERMISSIVE",
        "roles": ["public"],
        "cmd": "SELECT",
        "qual": "true",
        "with_check": None,
    }
    [problem] = policy_problems(["projects", "documents"], [*catalog, leak], DEPARSED_PREDICATE)
    assert problem.startswith("projects: unexpected policy")
    assert "'leak'" in problem
    # The tenant policy's USING alone (no WITH CHECK of its own), and a table with none.
    weak = {**catalog[0], "with_check": None}
    problems = policy_problems(["projects", "documents"], [weak], DEPARSED_PREDICATE)
    assert len(problems) == 3
    assert "documents: 0 tenant policies, not 1" in problems
    assert "projects: 0 tenant policies, not 1" in problems


@pytest.mark.parametrize("pinned", MAINTENANCE_POLICIES, ids=lambda p: p["policyname"])
def test_policy_problems_allow_the_maintenance_policies_as_pinned_only(
    pinned: dict[str, Any],
) -> None:
    tenant_policy = {
        "policyname": POLICY,
        "permissive": "PERMISSIVE",
        "roles": ["public"],
        "cmd": "ALL",
        "qual": DEPARSED_PREDICATE,
        "with_check": DEPARSED_PREDICATE,
    }
    tables = ["projects", pinned["tablename"]]
    catalog = [{"tablename": t, **tenant_policy} for t in tables]
    assert policy_problems(tables, [*catalog, pinned], DEPARSED_PREDICATE) == []
    for changed in (
        {"tablename": "projects"},
        {"roles": ["public"]},
        {"roles": [APP_ROLE]},
        {"qual": "false" if pinned["qual"] == "true" else "true"},
        {"with_check": "true"},
        {"cmd": "UPDATE"},
    ):
        widened = {**pinned, **changed}
        [problem] = policy_problems(tables, [*catalog, widened], DEPARSED_PREDICATE)
        assert "unexpected policy" in problem, changed

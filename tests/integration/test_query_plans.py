"""Every read path of tenant data uses an index that leads with tenant_id: checked with EXPLAIN
on 100k projects and documents and 10k users and refresh tokens across 100 tenants, as the app
role under RLS, for the ORM's statements and for the hot reads run on the driver; and in the
catalog, for every index of every tenant table."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from tenantry.config import load_settings
from tenantry.domain.documents import DocumentRepository
from tenantry.domain.projects import ProjectRepository
from tenantry.domain.repository import ListQuery
from tenantry.domain.users import UserRepository
from tenantry.infrastructure.db.tenancy import TenantSession
from tenantry.infrastructure.db.uow import SqlUnitOfWork

from ..conftest import plain_url, truncate_all

TENANTS = 100
PER_TENANT = 1000
# Enough that a lookup by id is planned on an index, not a scan.
USERS_PER_TENANT = 100
# One worker seeds the big tables once for all the module's cases.
pytestmark = pytest.mark.xdist_group("query_plans")


@pytest.fixture(scope="module")
async def big_tables(database_url: str) -> AsyncIterator[tuple[uuid.UUID, uuid.UUID]]:
    """100k projects and 100k documents; returns one tenant and one of its projects."""
    connection = await asyncpg.connect(plain_url(database_url))
    try:
        await connection.execute(
            """
            insert into tenants (id, name, slug, created_at, updated_at)
            select gen_random_uuid(), 'Tenant ' || n, 'plan-' || n, now(), now()
            from generate_series(1, $1) as n
            """,
            TENANTS,
        )
        await connection.execute(
            """
            insert into projects (id, tenant_id, name, description, created_at, updated_at)
            select gen_random_uuid(), t.id, 'Project ' || n, '',
                   now() - (n || ' minutes')::interval, now() - (n || ' minutes')::interval
            from tenants t cross join generate_series(1, $1) as n
            """,
            PER_TENANT,
        )
        await connection.execute(
            """
            insert into documents (id, tenant_id, project_id, title, content, created_at, updated_at)
            select gen_random_uuid(), p.tenant_id, p.id, 'Doc of ' || p.name, '', p.created_at, p.created_at
            from projects p
            """
        )
        await connection.execute(
            """
            insert into users (id, tenant_id, username, email, password_hash, roles,
                               created_at, updated_at)
            select gen_random_uuid(), t.id, 'user' || n, 'user' || n || '@example.com', 'x',
                   array['member'], now(), now()
            from tenants t cross join generate_series(1, $1) as n
            """,
            USERS_PER_TENANT,
        )
        await connection.execute(
            """
            insert into refresh_tokens (id, tenant_id, user_id, family_id, token_hash, expires_at,
                                        revoked_at, created_at, updated_at)
            select gen_random_uuid(), u.tenant_id, u.id, gen_random_uuid(), md5(u.id::text),
                   now() + interval '1 day', now(), now(), now()
            from users u
            """
        )
        await connection.execute(
            "analyze tenants; analyze projects; analyze documents; analyze users;"
            " analyze refresh_tokens"
        )
        row = await connection.fetchrow("select tenant_id, id from projects limit 1")
    finally:
        await connection.close()
    yield row["tenant_id"], row["id"]
    await truncate_all(database_url)


async def plans_of(
    app_database_url: str, tenant_id: uuid.UUID, action: Callable[[SqlUnitOfWork], Awaitable[Any]]
) -> list[tuple[str, dict[str, Any]]]:
    """Run ``action`` and EXPLAIN every SELECT it sent, through SQLAlchemy or on the driver, in
    the same tenant-bound transaction."""
    url = load_settings(environ={}, env_file=None, database_url=app_database_url).async_database_url
    engine = create_async_engine(url)
    captured: list[tuple[str, Any]] = []
    sent: list[asyncpg.connection.LoggedQuery] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def capture(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool
    ) -> None:
        if is_read(statement):
            captured.append((statement, parameters))

    @event.listens_for(engine.sync_engine, "connect")
    def log_queries(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(sent.append)

    plans = []
    try:
        async with async_sessionmaker(engine, class_=TenantSession)() as session:
            uow = SqlUnitOfWork(session)
            await action(uow)
            event.remove(engine.sync_engine, "before_cursor_execute", capture)
            # asyncpg calls its query loggers just after each query, from the event loop.
            await asyncio.sleep(0)
            driver = (await session.transaction()).driver
            reads = [(q.query, q.args) for q in sent if is_read(q.query)]
            sent.clear()
            for statement, arguments in reads:
                plan = await driver.fetchval(f"EXPLAIN (FORMAT JSON) {statement}", *arguments)
                # The engine's JSON codec has decoded it already.
                plans.append((statement, plan[0]["Plan"]))
            connection = await session.connection()
            for statement, parameters in captured:
                result = await connection.exec_driver_sql(
                    f"EXPLAIN (FORMAT JSON) {statement}", parameters
                )
                plan = result.scalar_one()
                plans.append(
                    (
                        statement,
                        plan[0]["Plan"] if isinstance(plan, list) else json.loads(plan)[0]["Plan"],
                    )
                )
    finally:
        await engine.dispose()
    return plans


def is_read(statement: str) -> bool:
    return statement.lstrip().upper().startswith("SELECT") and "set_config" not in statement


def scans(plan: dict[str, Any]) -> list[tuple[str, str]]:
    found = [(plan["Node Type"], plan.get("Relation Name", ""))]
    for child in plan.get("Plans", []):
        found.extend(scans(child))
    return found


def assert_no_seq_scan(plans: list[tuple[str, dict[str, Any]]]) -> None:
    assert plans, "nothing was queried"
    for statement, plan in plans:
        for node, relation in scans(plan):
            if relation in {"projects", "documents", "users", "refresh_tokens"}:
                assert node != "Seq Scan", f"sequential scan of {relation}:\n{statement}"


def index_names(plan: dict[str, Any]) -> list[str]:
    found = [plan["Index Name"]] if "Index Name" in plan else []
    for child in plan.get("Plans", []):
        found.extend(index_names(child))
    return found


# An index's table and its first key column (NULL for an expression), for a tenant table only.
TENANT_INDEX = """
    select t.relname as table_name, a.attname as leading
    from pg_index i
    join pg_class x on x.oid = i.indexrelid
    join pg_class t on t.oid = i.indrelid
    left join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
    where x.relname = $1 and exists (
        select from pg_attribute c
        where c.attrelid = i.indrelid and c.attname = 'tenant_id' and not c.attisdropped
    )
"""


async def assert_tenant_indexes_of(url: str, plans: list[tuple[str, dict[str, Any]]]) -> None:
    connection = await asyncpg.connect(plain_url(url))
    try:
        await assert_tenant_indexes(connection, plans)
    finally:
        await connection.close()


async def assert_tenant_indexes(
    connection: asyncpg.Connection, plans: list[tuple[str, dict[str, Any]]]
) -> None:
    """Every index a plan reads on a tenant table leads with tenant_id."""
    for statement, plan in plans:
        for index in index_names(plan):
            found = await connection.fetchrow(TENANT_INDEX, index)
            if found is not None:
                assert found["leading"] == "tenant_id", (
                    f"{index} on {found['table_name']} leads with {found['leading']}:\n{statement}"
                )


QUERIES = [
    ListQuery(),
    ListQuery(order_by="name", limit=50, offset=100),
    ListQuery(order_by="-updated_at"),
    ListQuery(q="project 42"),
    ListQuery(
        created_after=datetime.now(UTC) - timedelta(days=1), created_before=datetime.now(UTC)
    ),
]


@pytest.mark.parametrize(
    "query", QUERIES, ids=lambda q: f"{q.order_by}-q={q.q}-after={bool(q.created_after)}"
)
async def test_project_lists_use_tenant_indexes(
    big_tables: tuple[uuid.UUID, uuid.UUID], app_database_url: str, query: ListQuery
) -> None:
    tenant_id, _ = big_tables
    results: list[Any] = []

    async def action(uow: SqlUnitOfWork) -> None:
        results.append(await uow.repository(ProjectRepository, tenant_id).list(query))

    plans = await plans_of(app_database_url, tenant_id, action)
    assert_no_seq_scan(plans)
    await assert_tenant_indexes_of(app_database_url, plans)
    assert results[0][1] > 0


async def test_document_list_and_gets_use_tenant_indexes(
    big_tables: tuple[uuid.UUID, uuid.UUID], app_database_url: str
) -> None:
    tenant_id, project_id = big_tables

    async def action(uow: SqlUnitOfWork) -> None:
        assert await uow.repository(ProjectRepository, tenant_id).get(project_id) is not None
        documents, total = await uow.repository(DocumentRepository, tenant_id).list(
            ListQuery(q="doc"), project_id=project_id
        )
        assert total == 1
        assert (
            await uow.repository(DocumentRepository, tenant_id).get(
                documents[0].id, project_id=project_id
            )
            is not None
        )

    plans = await plans_of(app_database_url, tenant_id, action)
    assert_no_seq_scan(plans)
    await assert_tenant_indexes_of(app_database_url, plans)


async def test_the_driver_statements_use_indexes_that_lead_with_tenant_id(
    big_tables: tuple[uuid.UUID, uuid.UUID], app_database_url: str, database_url: str
) -> None:
    """The hot reads and the audited update bypass SQLAlchemy's cursor: their SQL and arguments
    are taken from asyncpg itself as the repositories run them, then explained as sent."""
    tenant_id, project_id = big_tables
    owner = await asyncpg.connect(plain_url(database_url))
    app = await asyncpg.connect(plain_url(app_database_url))
    try:
        user_id = await owner.fetchval(
            "select id from users where tenant_id = $1 limit 1", tenant_id
        )
        sent = await driver_queries(app_database_url, tenant_id, project_id, user_id)
        assert len(sent) == 3, [query.query for query in sent]
        for query in sent:
            async with app.transaction():
                await app.execute(f"SET LOCAL app.tenant_id = '{tenant_id}'")
                plan = json.loads(
                    await app.fetchval(f"EXPLAIN (FORMAT JSON) {query.query}", *query.args)
                )[0]["Plan"]
            assert_no_seq_scan([(query.query, plan)])
            assert index_names(plan), f"no index used:\n{query.query}"
            await assert_tenant_indexes(owner, [(query.query, plan)])
    finally:
        await app.close()
        await owner.close()


async def driver_queries(
    app_database_url: str, tenant_id: uuid.UUID, project_id: uuid.UUID, user_id: uuid.UUID
) -> list[asyncpg.connection.LoggedQuery]:
    """The reads the repositories' hot paths send on the driver, and the update that answers
    the row as it was (joined to itself), as asyncpg logged them; the update is rolled back."""
    url = load_settings(environ={}, env_file=None, database_url=app_database_url).async_database_url
    engine = create_async_engine(url)
    sent: list[asyncpg.connection.LoggedQuery] = []

    @event.listens_for(engine.sync_engine, "connect")
    def log_queries(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(sent.append)

    try:
        async with async_sessionmaker(engine, class_=TenantSession)() as session:
            uow = SqlUnitOfWork(session)
            assert await uow.repository(ProjectRepository, tenant_id).get(project_id) is not None
            assert await uow.repository(UserRepository, tenant_id).active_roles(
                user_id, session_id=uuid.uuid4()
            )
            projects = uow.repository(ProjectRepository, tenant_id)
            assert await projects.update_with_before(project_id, {"name": "Explained"})
    finally:
        await engine.dispose()
    # asyncpg calls its query loggers just after each query, from the event loop.
    await asyncio.sleep(0)
    return [
        query
        for query in sent
        if query.query.lstrip().upper().startswith(("SELECT", "UPDATE"))
        and "set_config" not in query.query
    ]


async def test_every_index_of_a_tenant_table_leads_with_tenant_id(database_url: str) -> None:
    """Found from the catalog, so a new table or index is covered without editing this test.
    The primary key (tenant_id, id) included: a tenant's rows sit together in every index.
    (Which keys must carry tenant_id at all is test_tenant_keys.py's.)"""
    connection = await asyncpg.connect(plain_url(database_url))
    try:
        indexes = await connection.fetch(
            """
            select t.relname as table_name, x.relname as index_name,
                   array(
                       select coalesce(a.attname, '(expression)')
                       from unnest(i.indkey[0:i.indnkeyatts - 1]) with ordinality as k(attnum, n)
                       left join pg_attribute a
                           on a.attrelid = i.indrelid and a.attnum = k.attnum
                       order by k.n
                   ) as columns
            from pg_index i
            join pg_class x on x.oid = i.indexrelid
            join pg_class t on t.oid = i.indrelid
            join pg_namespace s on s.oid = t.relnamespace
            where s.nspname = 'public' and exists (
                select from pg_attribute c
                where c.attrelid = t.oid and c.attname = 'tenant_id' and not c.attisdropped
            )
            """
        )
    finally:
        await connection.close()
    tables = {index["table_name"] for index in indexes}
    assert {"users", "projects", "documents", "files", "tasks", "task_logs"} <= tables
    for index in indexes:
        name, columns = f"{index['table_name']}.{index['index_name']}", index["columns"]
        assert columns[0] == "tenant_id", f"{name} is on {columns}"

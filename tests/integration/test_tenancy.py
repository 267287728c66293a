"""The two walls, proven on real PostgreSQL as the app role (which RLS holds)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
import uvicorn
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import Connection, event, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from tenantry import bootstrap
from tenantry.cli.run import _uvicorn_options
from tenantry.config import Settings, load_settings
from tenantry.domain.users import UserRepository
from tenantry.infrastructure.db import database
from tenantry.infrastructure.db.tenancy import TenantSession, TenantTransaction, sql_literals
from tenantry.infrastructure.db.uow import SqlUnitOfWork
from tenantry.infrastructure.db.users import SqlUserRepository, UserModel
from tenantry.infrastructure.embedded import free_port

from ..conftest import Client, plain_url, uvicorn_serving
from .identity import PASSWORD, add_user, create_tenant, owner_session


def engine_for(url: str, pool_size: int = 1) -> AsyncEngine:
    async_url = load_settings(environ={}, env_file=None, database_url=url).async_database_url
    # A short wait: a session that needed a second connection from this pool fails fast.
    return create_async_engine(async_url, pool_size=pool_size, max_overflow=0, pool_timeout=5)


@pytest.fixture
async def two_tenants(client: Client) -> dict[str, dict[str, str]]:
    found = {}
    for slug in ("acme", "globex"):
        body = await create_tenant(client, slug)
        found[slug] = {"tenant": body["tenant"]["id"], "user": body["user"]["id"]}
    return found


@pytest.fixture
async def app_connection(app_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(plain_url(app_database_url))
    yield connection
    await connection.close()


async def test_raw_sql_as_the_app_role_sees_only_its_tenant(
    two_tenants: dict[str, dict[str, str]], app_connection: asyncpg.Connection
) -> None:
    acme, globex = two_tenants["acme"], two_tenants["globex"]
    async with app_connection.transaction():
        await app_connection.execute(f"SET LOCAL app.tenant_id = '{acme['tenant']}'")
        users = await app_connection.fetch("select id, tenant_id from users")
        assert [str(row["tenant_id"]) for row in users] == [acme["tenant"]]
        assert (
            await app_connection.fetchval(
                "select count(*) from users where tenant_id = $1", uuid.UUID(globex["tenant"])
            )
            == 0
        )
        updated = await app_connection.execute(
            "update users set is_active = false where id = $1", uuid.UUID(globex["user"])
        )
        assert updated == "UPDATE 0"
        deleted = await app_connection.execute(
            "delete from users where tenant_id = $1", uuid.UUID(globex["tenant"])
        )
        assert deleted == "DELETE 0"

    insert = (
        "insert into users (id, tenant_id, username, email, password_hash, roles, created_at, updated_at) "
        "values (gen_random_uuid(), $1, 'intruder', 'i@x.example', 'x', '{member}', now(), now())"
    )
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await as_tenant(app_connection, acme["tenant"], insert, uuid.UUID(globex["tenant"]))
    move = "update users set tenant_id = $1 where id = $2"
    # Row level security refuses it; on Citus, Citus does first (a row's distribution column
    # never changes).
    with pytest.raises(
        (asyncpg.InsufficientPrivilegeError, asyncpg.FeatureNotSupportedError),
        match=r"row-level security|partition value",
    ):
        await as_tenant(
            app_connection,
            acme["tenant"],
            move,
            uuid.UUID(globex["tenant"]),
            uuid.UUID(acme["user"]),
        )


async def as_tenant(connection: asyncpg.Connection, tenant: str, sql: str, *args: object) -> None:
    async with connection.transaction():
        await connection.execute(f"SET LOCAL app.tenant_id = '{tenant}'")
        await connection.execute(sql, *args)


async def test_with_no_tenant_set_nothing_is_visible(
    two_tenants: dict[str, dict[str, str]], app_connection: asyncpg.Connection
) -> None:
    for table in ("users", "refresh_tokens", "api_keys"):
        assert await app_connection.fetchval(f"select count(*) from {table}") == 0
    async with app_connection.transaction():
        await app_connection.execute("SET LOCAL app.tenant_id = ''")
        assert await app_connection.fetchval("select count(*) from users") == 0
    assert await app_connection.fetchval("select count(*) from tenants") == 2


async def test_a_pooled_connection_carries_no_tenant_into_the_next_use(
    two_tenants: dict[str, dict[str, str]], app_database_url: str
) -> None:
    engine = engine_for(app_database_url, pool_size=1)
    sessions = async_sessionmaker(engine, expire_on_commit=False, class_=TenantSession)
    try:
        async with sessions() as session:
            uow = SqlUnitOfWork(session)
            found = await uow.repository(
                UserRepository, uuid.UUID(two_tenants["acme"]["tenant"])
            ).get(uuid.UUID(two_tenants["acme"]["user"]))
            assert found is not None
            await session.commit()
            # Same session, next transaction: the binding is re-applied after BEGIN.
            assert await session.scalar(text("select count(*) from users")) == 1
        async with sessions() as session:
            # The one pooled connection again, for a session bound to no tenant.
            assert await session.scalar(text("select current_setting('app.tenant_id', true)")) in (
                None,
                "",
            )
            assert await session.scalar(text("select count(*) from users")) == 0
            uow = SqlUnitOfWork(session)
            other = await uow.repository(
                UserRepository, uuid.UUID(two_tenants["globex"]["tenant"])
            ).get(uuid.UUID(two_tenants["acme"]["user"]))
            assert other is None
            assert await session.scalar(text("select count(*) from users")) == 1
    finally:
        await engine.dispose()


async def test_driver_statements_run_under_the_sessions_current_tenant(
    two_tenants: dict[str, dict[str, str]], app_database_url: str
) -> None:
    """The hot reads bypass SQLAlchemy's execute, not row level security: the tenant set for
    the transaction, and set again when the session is rebound mid-transaction, holds them."""
    acme, globex = two_tenants["acme"], two_tenants["globex"]
    engine = engine_for(app_database_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False, class_=TenantSession)
    try:
        async with sessions() as session:
            uow = SqlUnitOfWork(session)
            assert await uow.repository(UserRepository, uuid.UUID(acme["tenant"])).active_roles(
                uuid.UUID(acme["user"])
            )
            # The same transaction, now for the other tenant, even asking for its own user id
            # through wall 1's filter: wall 2 moved with it.
            globex_users = uow.repository(UserRepository, uuid.UUID(globex["tenant"]))
            assert await globex_users.active_roles(uuid.UUID(globex["user"]))
            assert await globex_users.active_roles(uuid.UUID(acme["user"])) is None
            assert (
                await session.scalar(text("select current_setting('app.tenant_id')"))
                == (globex["tenant"])
            )
            raw = (await (await session.connection()).get_raw_connection()).driver_connection
            assert await raw.fetchval("select count(*) from users") == 1
    finally:
        await engine.dispose()


async def test_driver_reads_and_orm_writes_share_one_transaction_on_one_connection(
    two_tenants: dict[str, dict[str, str]], app_database_url: str
) -> None:
    """A unit of work's statements, on the driver or through the ORM, run in one transaction
    on one pooled connection: on a pool of one, a read then a write in one session never waits
    for the connection the session itself holds, and both see one transaction id."""
    acme = two_tenants["acme"]
    tenant, user = uuid.UUID(acme["tenant"]), uuid.UUID(acme["user"])
    engine = engine_for(app_database_url, pool_size=1)
    sessions = async_sessionmaker(engine, expire_on_commit=False, class_=TenantSession)
    txid = text("select txid_current()")
    try:
        async with sessions() as session:
            uow = SqlUnitOfWork(session)
            assert await uow.repository(UserRepository, tenant).active_roles(user)
            assert TenantTransaction.KEY in session.info
            assert engine.pool.checkedout() == 1  # type: ignore[attr-defined]
            first = await session.scalar(txid)
            # An ORM read, then a write and its commit, on the same (only) connection.
            assert (await uow.repository(UserRepository, tenant).get(user)) is not None
            await uow.repository(UserRepository, tenant).record_login(user, datetime.now(UTC))
            assert await session.scalar(txid) == first
            await uow.commit()
            assert TenantTransaction.KEY not in session.info
            assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
            # The next statement begins the next transaction; rollback ends it.
            assert await uow.repository(UserRepository, tenant).active_roles(user)
            assert await session.scalar(txid) != first
            await uow.rollback()
            assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
            # And close ends one too: nothing stays checked out after the session.
            assert await uow.repository(UserRepository, tenant).active_roles(user)
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        async with sessions() as session:
            # The pooled connection carries neither a transaction nor a tenant.
            assert await session.scalar(text("select current_setting('app.tenant_id', true)")) in (
                None,
                "",
            )
            assert await session.scalar(text("select count(*) from users")) == 0
    finally:
        await engine.dispose()


async def test_requests_give_their_connection_back_whatever_their_answer(
    app: Litestar, client: Client
) -> None:
    """Reads on the driver, a 404, a 401 after the bearer check, a refused parameter and a write:
    after each, the app's pool has every connection back."""
    engine = app.plugins.get(SQLAlchemyPlugin).config[0].get_engine()
    owner = await owner_session(client, "acme")
    created = await client.post("/api/v1/projects", headers=owner, json={"name": "Apollo"})
    project = created.json()["id"]
    member = await add_user(client, owner, "mia", ["member"], "acme")
    member_id = (await client.get("/api/v1/auth/me", headers=member)).json()["id"]
    answers = [
        (await client.get(f"/api/v1/projects/{project}", headers=owner)).status_code,
        (await client.get(f"/api/v1/projects/{uuid.uuid4()}", headers=owner)).status_code,
        (await client.get("/api/v1/projects?limit=0", headers=owner)).status_code,
        (
            await client.patch(
                f"/api/v1/projects/{project}", headers=owner, json={"name": "Artemis"}
            )
        ).status_code,
        (await client.get(f"/api/v1/projects/{project}", headers=owner)).status_code,
    ]
    assert answers == [200, 404, 422, 200, 200]
    assert engine.pool.checkedout() == 0
    # A deactivated member's token: the bearer check's own read finds no active user, a 401.
    deactivated = await client.patch(
        f"/api/v1/users/{member_id}", headers=owner, json={"is_active": False}
    )
    assert deactivated.status_code == 200, deactivated.text
    assert (await client.get(f"/api/v1/projects/{project}", headers=member)).status_code == 401
    assert engine.pool.checkedout() == 0


@dataclass
class SentStatements:
    """What an engine's pool sends, each statement with its server process (one per pooled
    connection). asyncpg logs the driver's statements after each ran, in order, but not the
    ORM's (prepared statements): those are taken from SQLAlchemy as each is about to run, with
    whether its connection was then in a transaction, as the server's last answer on it said."""

    driver: list[tuple[int, str]] = field(default_factory=list)
    orm: list[tuple[int, str, bool]] = field(default_factory=list)

    def watch(self, engine: AsyncEngine) -> None:
        """Before the engine's first connection: the driver's log is set up as each is made."""
        event.listen(engine.sync_engine, "connect", self._log_driver)
        event.listen(engine.sync_engine, "before_cursor_execute", self._log_orm)

    def _log_driver(self, dbapi_connection: Any, _record: Any) -> None:
        driver: asyncpg.Connection = dbapi_connection.driver_connection
        backend = driver.get_server_pid()
        driver.add_query_logger(lambda query: self.driver.append((backend, query.query)))

    def _log_orm(self, connection: Connection, _cursor: Any, statement: str, *_: Any) -> None:
        driver: asyncpg.Connection = connection.connection.driver_connection
        self.orm.append((driver.get_server_pid(), statement, driver.is_in_transaction()))

    def take(self) -> SentStatements:
        """What was sent since the last take."""
        taken = SentStatements(self.driver, self.orm)
        self.driver, self.orm = [], []
        return taken


def controls_transaction(sql: str) -> bool:
    return (
        re.match(r"\s*(BEGIN|START|COMMIT|END|ROLLBACK|ABORT|SAVEPOINT|RELEASE)\b", sql, re.I)
        is not None
    )


def what_it_does(sql: str) -> str:
    """ "SELECT users" for a select from users (its joins aside), "UPDATE projects"..."""
    found = re.match(r"(SELECT\b.*?\bFROM|UPDATE|INSERT INTO|DELETE FROM) (\w+)", sql, re.S)
    assert found is not None, sql
    return f"{found[1].split()[0]} {found[2]}"


def one_transaction(sent: SentStatements, *, end: str) -> tuple[list[str], list[str]]:
    """Assert that one request's statements ran in one transaction on one connection; return
    what those run in it did, on the driver and through the ORM."""
    backends = {backend for backend, _ in sent.driver} | {backend for backend, _, _ in sent.orm}
    assert len(backends) == 1, sent
    driver = [sql for _, sql in sent.driver]
    # Begun with the tenant in one round trip, ended once, and nothing between begins another.
    assert driver[0].startswith("BEGIN; SET LOCAL app.tenant_id = '"), driver
    # BEGIN's round trip may carry a check (tenancy.begin_with_check).
    checked = [f"{name} with BEGIN" for name in re.findall(r"; SELECT (tenantry_\w+)\(", driver[0])]
    # The commit may carry rows appended and statements run at commit (tenancy.append_at_commit,
    # run_at_commit) in its round trip: named in the order they run.
    ending = driver[-1]
    assert ending == end or (end == "COMMIT" and ending.endswith("; COMMIT")), driver
    appended = [
        " ".join(name for name in found.groups() if name) + " at commit"
        for found in re.finditer(
            r'(?:^|; )(?:(INSERT) INTO "(\w+)"|SELECT (tenantry_\w+)\(|(UPDATE) (\w+) SET)', ending
        )
    ]
    assert not any(controls_transaction(sql) for sql in driver[1:-1]), driver
    # Each ORM statement ran while that connection was in a transaction, and within this
    # request it was in no other than the one above.
    assert all(in_transaction for _, _, in_transaction in sent.orm), sent.orm
    orm = [sql for _, sql, _ in sent.orm]
    assert not any(controls_transaction(sql) for sql in orm), orm
    return checked + [what_it_does(sql) for sql in driver[1:-1]] + appended, [
        what_it_does(sql) for sql in orm
    ]


async def owner_over_http(http: httpx.AsyncClient, slug: str) -> dict[str, str]:
    """identity.owner_session's steps, through a real server."""
    owner = {"username": "olive", "email": f"olive@{slug}.example", "password": PASSWORD}
    created = await http.post("/api/v1/tenants", json={"name": slug, "slug": slug, "owner": owner})
    assert created.status_code == 201, created.text
    tokens = await http.post(
        "/api/v1/auth/login", json={"tenant": slug, "login": "olive", "password": PASSWORD}
    )
    assert tokens.status_code == 200, tokens.text
    return {"Authorization": f"Bearer {tokens.json()['access_token']}"}


async def test_a_read_then_write_request_runs_in_one_transaction(
    settings: Settings, clean_state: None
) -> None:
    """DELETE soft-deletes the project, whose answer says who may (else the transaction undoes
    it), and its documents with the commit; PATCH writes
    and reads the audit trail's "before" in one statement (the table joined to itself), and when
    stale reads to tell 412 from 404;
    each change appends its audit event and publishes its webhook event (to no endpoint here),
    both sent with the COMMIT. In each, the bearer check (the token's roles confirmed in BEGIN's
    round trip) and the use case's reads and writes (the generic repository's, all compiled once
    and run on the driver) share one transaction; ORM statements, had there been any, would
    have to as well."""
    served = msgspec.structs.replace(settings, host="127.0.0.1", port=free_port())
    app = bootstrap.create_app(served)
    sent = SentStatements()
    sent.watch(app.plugins.get(SQLAlchemyPlugin).config[0].get_engine())
    # A real server in this event loop, not the test client, which runs the app in a thread of
    # its own: asyncpg calls its query loggers soon after each query, in the app's loop, so
    # they have all run by the time the answer has come back here.
    async with (
        uvicorn_serving(uvicorn.Config(app, **_uvicorn_options(served))),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}") as http,
    ):
        owner = await owner_over_http(http, "acme")
        # The token's roles confirmed in BEGIN's message; on Citus, which takes no check there
        # (tenancy.TenantConnection), read.
        engine = app.plugins.get(SQLAlchemyPlugin).config[0].get_engine()
        async with engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            on_citus = not driver.checks_in_begin
        sent.take()  # the requests under test start here
        bearer_check = "SELECT users" if on_citus else "tenantry_confirm_roles with BEGIN"

        # A new row, which nothing reads before the commit, is written by it (add_at_commit).
        created = await http.post("/api/v1/projects", headers=owner, json={"name": "Apollo"})
        assert created.status_code == 201, created.text
        assert one_transaction(sent.take(), end="COMMIT") == (
            [
                bearer_check,
                "INSERT projects at commit",
                "INSERT audit_events at commit",
                "tenantry_publish_webhook_event at commit",
            ],
            [],
        )
        path, first = f"/api/v1/projects/{created.json()['id']}", created.headers["ETag"]
        document = await http.post(
            f"{path}/documents", headers=owner, json={"title": "Plan", "content": "c"}
        )
        assert document.status_code == 201, document.text
        # A document: its project found live, and held so, by the statement that writes it.
        assert one_transaction(sent.take(), end="COMMIT") == (
            [
                bearer_check,
                "INSERT audit_events at commit",
                "tenantry_add_document at commit",
                "tenantry_publish_webhook_event at commit",
            ],
            [],
        )
        # What the creates answered, built from what was given, is what was written.
        shown = await http.get(f"{path}/documents/{document.json()['id']}", headers=owner)
        assert shown.json() == document.json()
        assert (await http.get(path, headers=owner)).json() == created.json()
        sent.take()

        patched = await http.patch(
            path, headers={**owner, "If-Match": first}, json={"name": "Artemis"}
        )
        assert patched.status_code == 200, patched.text
        assert one_transaction(sent.take(), end="COMMIT") == (
            [
                bearer_check,
                "UPDATE projects",
                "INSERT audit_events at commit",
                "tenantry_publish_webhook_event at commit",
            ],
            [],
        )

        stale = await http.patch(path, headers={**owner, "If-Match": first}, json={"name": "X"})
        assert stale.status_code == 412, stale.text
        assert one_transaction(sent.take(), end="ROLLBACK") == (
            [
                bearer_check,
                "UPDATE projects",
                "SELECT projects",
            ],
            [],
        )

        deleted = await http.delete(path, headers=owner)
        assert deleted.status_code == 204, deleted.text
        assert one_transaction(sent.take(), end="COMMIT") == (
            [
                bearer_check,
                "UPDATE projects",
                "INSERT audit_events at commit",
                "UPDATE documents at commit",
                "tenantry_publish_webhook_event at commit",
            ],
            [],
        )


async def test_a_pool_of_one_connection_serves_read_then_write_requests(
    settings: Settings, clean_state: None
) -> None:
    """The bearer check's read and the use case's reads and writes share the request's one
    connection: a request that asked the pool for a second would wait on itself until the
    pool timeout, then answer 503."""
    one = msgspec.structs.replace(settings, db_pool_size=1, db_max_overflow=0, db_pool_timeout=1)
    app = bootstrap.create_app(one)
    engine = app.plugins.get(SQLAlchemyPlugin).config[0].get_engine()
    assert engine.pool.size() == 1
    async with AsyncTestClient(app=app) as client:
        owner = await owner_session(client, "acme")

        async def call(
            method: str, path: str, if_match: str | None = None, **kwargs: Any
        ) -> tuple[int, int]:
            headers = owner if if_match is None else {**owner, "If-Match": if_match}
            response = await client.request(method, path, headers=headers, **kwargs)
            return response.status_code, engine.pool.checkedout()

        created = await client.post("/api/v1/projects", headers=owner, json={"name": "Apollo"})
        assert (created.status_code, engine.pool.checkedout()) == (201, 0), created.text
        path, first = f"/api/v1/projects/{created.json()['id']}", created.headers["ETag"]
        answers = [
            await call("PATCH", path, first, json={"name": "Artemis"}),
            # Stale: the write finds nothing, then a read tells 412 from 404.
            await call("PATCH", path, first, json={"name": "X"}),
            await call("GET", path),
            await call("DELETE", path),
            await call("GET", path),
        ]
    assert answers == [(200, 0), (412, 0), (200, 0), (204, 0), (404, 0)]


@pytest.mark.filterwarnings("error::RuntimeWarning")
async def test_a_pooled_connection_the_server_ended_is_replaced_at_checkout(
    settings: Settings, database_url: str
) -> None:
    """An idle connection is taken from the app's pool without SQLAlchemy's greenlet; one
    the server has ended must be replaced, which needs a connect: that checkout is done again
    in the greenlet, leaving nothing behind (no warning, nothing checked out)."""
    one = msgspec.structs.replace(settings, db_pool_size=1, db_max_overflow=0)
    engine = database.alchemy_config(one).get_engine()
    admin = await asyncpg.connect(plain_url(database_url))
    try:
        first = await TenantTransaction.begin(engine, None)
        ended, closed = first.driver.get_server_pid(), asyncio.Event()
        first.driver.add_termination_listener(lambda _: closed.set())
        await first.end(commit=True)
        assert await admin.fetchval("select pg_terminate_backend($1::integer)", ended)
        await asyncio.wait_for(closed.wait(), 10)

        again = await TenantTransaction.begin(engine, None)
        assert again.driver.get_server_pid() != ended
        assert await again.run(again.driver.fetchval("select 1")) == 1
        await again.end(commit=True)
        assert (engine.pool.checkedout(), engine.pool.checkedin()) == (0, 1)
    finally:
        await admin.close()
        await engine.dispose()


async def test_a_connection_past_the_pools_size_is_closed_when_given_back(
    settings: Settings,
) -> None:
    """A connection given back to a pool holding more than its size is closed (I/O: in the
    greenlet), not queued: the pool shrinks back to its size."""
    config = msgspec.structs.replace(settings, db_pool_size=1, db_max_overflow=1)
    engine = database.alchemy_config(config).get_engine()
    try:
        held = [await TenantTransaction.begin(engine, None) for _ in range(2)]
        assert engine.pool.overflow() == 1
        for transaction in held:
            await transaction.end(commit=True)
        assert (engine.pool.checkedout(), engine.pool.checkedin(), engine.pool.overflow()) == (
            0,
            1,
            0,
        )
        assert [transaction.driver.is_closed() for transaction in held].count(True) == 1
    finally:
        await engine.dispose()


async def test_a_request_after_another_tenants_request_sees_only_its_own(client: Client) -> None:
    """Through the API, one after the other on a small pool: no bleed between requests."""
    tokens = {}
    for slug in ("acme", "globex"):
        await create_tenant(client, slug)
        login = await client.post(
            "/api/v1/auth/login",
            json={"tenant": slug, "login": "olive", "password": "correct horse battery 9"},
        )
        tokens[slug] = {"Authorization": f"Bearer {login.json()['access_token']}"}
    for _ in range(10):
        for slug, headers in tokens.items():
            listed = (await client.get("/api/v1/users", headers=headers)).json()
            assert [u["email"] for u in listed["items"]] == [f"olive@{slug}.example"]


async def test_repository_bulk_paths_stay_in_their_tenant(
    two_tenants: dict[str, dict[str, str]], app_database_url: str, database_url: str
) -> None:
    engine = engine_for(app_database_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False, class_=TenantSession)
    acme = uuid.UUID(two_tenants["acme"]["tenant"])
    globex_user = uuid.UUID(two_tenants["globex"]["user"])
    try:
        async with sessions() as session:
            repository = SqlUserRepository(session, acme).orm
            assert await repository.delete_many([globex_user]) == []
            assert await repository.delete_where(UserModel.id == globex_user) == []
            assert await repository.count() == 1
            await session.commit()
    finally:
        await engine.dispose()
    connection = await asyncpg.connect(plain_url(database_url))
    try:
        assert (
            await connection.fetchval("select count(*) from users where id = $1", globex_user) == 1
        )
    finally:
        await connection.close()


async def test_the_app_role_is_held_by_rls_and_the_owner_is_not(
    app_database_url: str, database_url: str
) -> None:
    for url, expected_clean in ((app_database_url, True), (database_url, False)):
        engine = engine_for(url)
        try:
            problems = await database.role_problems(engine)
        finally:
            await engine.dispose()
        assert (problems == []) is expected_clean, problems


async def test_production_refuses_a_role_that_bypasses_rls(
    settings: Settings, database_url: str
) -> None:
    unsafe = msgspec.structs.replace(settings, env="production", database_url=database_url)
    # The lifespan task group wraps the start-up error.
    with pytest.RaisesGroup(
        pytest.RaisesExc(RuntimeError, match="refusing to start: the database role is a superuser"),
        flatten_subgroups=True,
    ):
        async with AsyncTestClient(app=bootstrap.create_app(unsafe)):
            pass
    safe = msgspec.structs.replace(settings, env="production")
    async with AsyncTestClient(app=bootstrap.create_app(safe)) as client:
        assert (await client.get("/health")).status_code == 200


@pytest.mark.parametrize(
    ("path", "content_type", "head", "tail"),
    [
        ("/api/v1/projects", "application/json", b'{"name": "', b'Apollo"}'),
        (
            "/api/v1/files",
            "multipart/form-data; boundary=XyZ",
            b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\nhello, ",
            b"world\n\r\n--XyZ--\r\n",
        ),
    ],
    ids=["json", "upload"],
)
async def test_a_request_waiting_on_its_clients_body_holds_no_connection(
    settings: Settings, clean_state: None, path: str, content_type: str, head: bytes, tail: bytes
) -> None:
    """A client that sends its headers, then its body slowly, must not keep a pooled connection
    (idle in a transaction) meanwhile: a few such clients would take the whole pool. A JSON body
    is received before the credentials' read, an upload's after it, its transaction ended."""
    served = msgspec.structs.replace(settings, host="127.0.0.1", port=free_port())
    app = bootstrap.create_app(served)
    engine = app.plugins.get(SQLAlchemyPlugin).config[0].get_engine()
    sent_head, go_on = asyncio.Event(), asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield head
        sent_head.set()
        await go_on.wait()
        yield tail

    async with (
        uvicorn_serving(uvicorn.Config(app, **_uvicorn_options(served))),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}") as http,
    ):
        owner = await owner_over_http(http, "acme")
        headers = {
            **owner,
            "Content-Type": content_type,
            "Content-Length": str(len(head) + len(tail)),
        }
        answer = asyncio.ensure_future(http.post(path, headers=headers, content=slow_body()))
        await sent_head.wait()
        # Long enough for the server to have read the headers and the credentials.
        await asyncio.sleep(0.3)
        assert engine.pool.checkedout() == 0
        go_on.set()
        response = await answer
        assert response.status_code == 201, response.text
    assert engine.pool.checkedout() == 0


@pytest.mark.parametrize("content_type", ["application/json", "application/octet-stream"])
async def test_a_body_the_route_refuses_is_not_received_first(
    settings: Settings, clean_state: None, content_type: str
) -> None:
    """The upload route has no body limit: a JSON body is received before the credentials'
    read only where its route bounds it, so a 10 GB body announced to the upload route is
    answered 415 at once, unread, and holds no connection meanwhile."""
    served = msgspec.structs.replace(settings, host="127.0.0.1", port=free_port())
    app = bootstrap.create_app(served)
    engine = app.plugins.get(SQLAlchemyPlugin).config[0].get_engine()
    async with (
        uvicorn_serving(uvicorn.Config(app, **_uvicorn_options(served))),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}") as http,
    ):
        owner = await owner_over_http(http, "acme")
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        head = (
            "POST /api/v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {owner['Authorization']}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {10**10}\r\n\r\n"
        )
        writer.write(head.encode() + b"x" * 1024)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
        assert status_line.split()[1] == b"415", status_line
        assert engine.pool.checkedout() == 0
        writer.close()


@hypothesis_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(items=st.lists(st.text(max_size=20), max_size=4))
@example(items=["E'\\'' \\000 $$", "}{x}", ""])
async def test_a_tuple_of_any_text_reaches_the_server_as_its_array(
    database_owner: asyncpg.Connection, items: list[str]
) -> None:
    """What a check in BEGIN's message is made of (tenancy.sql_literals): a tuple becomes an
    ARRAY of its items' literals, which the server reads back as given; an item holding a NUL,
    which no PostgreSQL text can, is refused."""
    statement = sql_literals("SELECT {items}::text[]", items=tuple(items))
    if any("\x00" in item for item in items):
        with pytest.raises(asyncpg.PostgresError):
            await database_owner.fetchval(statement)
        return
    assert await database_owner.fetchval(statement) == items

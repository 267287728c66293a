"""The test harness: real PostgreSQL and Redis, never stand-ins.

``TENANTRY_TEST_DATABASE_URL`` / ``TENANTRY_TEST_REDIS_URL`` point the suite at running servers
(the database URL is an admin connection used to create and drop a fresh database per session);
unset, the embedded engines start once per session. Every test session migrates its own fresh
database with alembic, the same path production takes, as the owner; the app then connects as
the app role, so row level security applies to every test as it does in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import json
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
import uvicorn
from _pytest.nodeid import NodeId
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from tenantry import bootstrap
from tenantry.config import Settings, load_settings
from tenantry.infrastructure.db import migrations
from tenantry.infrastructure.db.citus import CITUS_INSTALLED
from tenantry.infrastructure.db.rls import APP_ROLE
from tenantry.infrastructure.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from tenantry.infrastructure.observability.logging import captured
from tests.openbao import OpenBao

Client = AsyncTestClient[Litestar]


def plain_url(url: str) -> str:
    """asyncpg wants postgresql:// without the SQLAlchemy driver suffix."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def with_database(url: str, name: str) -> str:
    head, sep, query = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}{sep}{query}"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """What pytest-xdist's ``--dist loadgroup`` means to do: name each item of an
    ``xdist_group`` ``<id>@<group>``, so that one worker runs the whole group. xdist 3.8 sets
    ``item._nodeid``, which pytest 9.2 no longer reads (an item's id is ``item._id``): every
    group was spread over both workers."""
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        groups = sorted(
            {
                str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                for mark in item.iter_markers("xdist_group")
            }
        )
        if groups and "@" not in item.nodeid:
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(groups)}")


def pytest_collection_finish(session: pytest.Session) -> None:
    """The garbage collector's full collections took a quarter of the test processes' CPU:
    each test leaves its app and client in cycles, and a full collection came every other
    test, walking everything alive each time. What collection made (the modules, their
    constants, hypothesis' strategies) lives until the end: frozen, no full collection walks
    it again (bootstrap.freeze_startup_heap does the same for a server); and full collections
    come ten times more rarely: what a test leaves is reclaimed all the same, later."""
    gc.collect()
    gc.freeze()
    threshold, young, _ = gc.get_threshold()
    gc.set_threshold(threshold, young, 100)


@pytest.fixture(scope="session")
def admin_database_url() -> Iterator[str]:
    if url := os.environ.get("TENANTRY_TEST_DATABASE_URL"):
        yield url
        return
    # Not under pytest's temporary root: PostgreSQL runs as its own user when we are root, and
    # every pytest session that starts meanwhile makes that root private again.
    with tempfile.TemporaryDirectory(prefix="tenantry-test-") as root:
        postgres = EmbeddedPostgres(Path(root) / "postgres")
        postgres.start()
        # This cluster dies with the session and no test here crashes it (test_faults breaks
        # a cluster of its own, a durable one): flushing to disk would buy nothing but time.
        postgres.server.psql(
            "alter system set fsync = off; alter system set synchronous_commit = off;"
            " alter system set full_page_writes = off; select pg_reload_conf();"
        )
        yield postgres.url()
        postgres.stop()


async def create_database(admin_url: str, name: str) -> str:
    connection = await asyncpg.connect(plain_url(admin_url))
    try:
        await connection.execute(f'create database "{name}"')
    finally:
        await connection.close()
    return with_database(admin_url, name)


async def drop_database(admin_url: str, name: str) -> None:
    connection = await asyncpg.connect(plain_url(admin_url))
    try:
        await connection.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await connection.close()


@pytest.fixture(scope="session")
async def database_url(admin_database_url: str) -> AsyncIterator[str]:
    name = f"tenantry_test_{uuid.uuid4().hex[:12]}"
    url = await create_database(admin_database_url, name)
    await asyncio.to_thread(migrations.upgrade, url)
    yield url
    await drop_database(admin_database_url, name)


@pytest.fixture(scope="session")
def app_database_url(database_url: str) -> str:
    """The test database as the app role, which row level security holds (the owner and
    superusers bypass it, so tests connected as them would prove nothing)."""
    return as_app_role(database_url)


def as_app_role(url: str) -> str:
    return make_url(url).set(username=APP_ROLE, password=None).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("TENANTRY_TEST_REDIS_URL"):
        yield own_redis_database(url, os.environ.get("PYTEST_XDIST_WORKER", "gw0"))
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), persist=False)
    server.start()
    yield server.url
    server.stop()


def own_redis_database(url: str, worker: str) -> str:
    """Tests flush their Redis database: each parallel pytest-xdist worker (gw0, gw1 ...)
    takes its own, counting down from the one given (gw0 keeps it)."""
    index = int(worker.removeprefix("gw"))
    head, _, number = url.rpartition("/")
    database = int(number or 0) - index
    if database < 0:
        raise pytest.UsageError(f"TENANTRY_TEST_REDIS_URL: no Redis database left for {worker}")
    return f"{head}/{database}"


@pytest.fixture(scope="session")
def keyring_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("keys") / "keyring.json")


@pytest.fixture(scope="session")
def s3_url() -> Iterator[str]:
    """A real S3 endpoint: ``TENANTRY_TEST_S3_URL`` (MinIO, say), else a moto server."""
    if url := os.environ.get("TENANTRY_TEST_S3_URL"):
        yield url
        return
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """A real OpenBao dev server, shared by the session; tests keep to their own paths."""
    server = OpenBao(tmp_path_factory.mktemp("openbao") / "bao.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def vault_settings(settings: Settings, vault: OpenBao) -> Settings:
    """``settings`` reading secrets from the OpenBao server, under paths of this test alone."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    return msgspec.structs.replace(
        settings,
        vault_addr=vault.addr,
        vault_token=vault.token,
        vault_database_path=f"{prefix}/database",
        vault_s3_path=f"{prefix}/s3",
        vault_keyring_path=f"{prefix}/keyring",
        vault_retries=1,
    )


@pytest.fixture
def settings(
    database_url: str, app_database_url: str, redis_url: str, keyring_path: str, tmp_path: Path
) -> Settings:
    return load_settings(
        environ={},
        env_file=None,
        env="test",
        database_url=app_database_url,
        migration_database_url=database_url,
        redis_url=redis_url,
        log_json=True,
        db_pool_size=5,
        db_max_overflow=0,
        keyring_path=keyring_path,
        files_dir=str(tmp_path / "files"),
        # Cheap argon2 keeps the suite fast; the login benchmark measures the real parameters.
        password_time_cost=1,
        password_memory_kib=1024,
    )


@pytest.fixture(scope="session")
async def owner_connections() -> AsyncIterator[dict[str, asyncpg.Connection]]:
    """A connection as each database's owner for the clean-up after every test, kept for the
    session: a new one per test took 20 ms, one kept 1 ms."""
    connections: dict[str, asyncpg.Connection] = {}
    yield connections
    for connection in connections.values():
        # Its server may have stopped already (a Citus cluster ends before this fixture).
        connection.terminate()


@pytest.fixture
async def clean_state(
    database_url: str, redis_url: str, owner_connections: dict[str, asyncpg.Connection]
) -> AsyncIterator[None]:
    """Each test starts from empty tables and an empty Redis database."""
    yield
    kept = await owner_connection(owner_connections, database_url)
    if not await emptied_on(kept):
        kept.terminate()
        await empty_tables(await owner_connection(owner_connections, database_url))
    client = Redis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()


async def owner_connection(
    connections: dict[str, asyncpg.Connection], database_url: str
) -> asyncpg.Connection:
    """The kept connection as the database's owner; a new one when there is none or it closed."""
    connection = connections.get(database_url)
    if connection is None or connection.is_closed():
        connection = connections[database_url] = await asyncpg.connect(plain_url(database_url))
    return connection


async def emptied_on(connection: asyncpg.Connection) -> bool:
    """Whether ``connection`` emptied every table: not when its server restarted or ended it
    since the last test."""
    try:
        await empty_tables(connection)
    except (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError, ConnectionError):
        return False
    return True


async def truncate_all(database_url: str) -> None:
    """Every table emptied, on a connection of its own."""
    connection = await asyncpg.connect(plain_url(database_url))
    try:
        await empty_tables(connection)
    finally:
        await connection.close()


async def empty_tables(connection: asyncpg.Connection) -> None:
    """Every table emptied. On one node by DELETE, as the superuser with triggers and foreign
    keys off (an append-only table refuses it otherwise): a few rows go in a millisecond, where
    TRUNCATE makes every table and index a new file, about 60 ms. A Citus coordinator's DELETE
    would reach the shards' triggers and keys on the workers: there it is TRUNCATE."""
    tables = await connection.fetch(
        "select tablename from pg_tables where schemaname = 'public' "
        "and tablename <> 'alembic_version'"
    )
    names = [f'"{row["tablename"]}"' for row in tables]
    if not names:
        return
    if await connection.fetchval(CITUS_INSTALLED):
        await connection.execute(f"truncate {', '.join(names)} cascade")
        return
    async with connection.transaction():
        await connection.execute("set local session_replication_role = replica")
        await connection.execute("; ".join(f"delete from {name}" for name in names))


@pytest.fixture
async def database_owner(
    database_url: str, clean_state: None, owner_connections: dict[str, asyncpg.Connection]
) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the migration role, which row level security does not hold: to set up
    and read back what is stored, past both walls. The one the clean-up keeps."""
    connection = await owner_connection(owner_connections, database_url)
    yield connection
    if connection.is_in_transaction():
        # A test that failed inside a transaction of its own: the clean-up takes a new one.
        connection.terminate()


@pytest.fixture
def app(settings: Settings) -> Litestar:
    return bootstrap.create_app(settings)


@pytest.fixture
async def client(app: Litestar, clean_state: None) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


class LogLines:
    """Every log line written during a test, rendered as the JSON production would write."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def text(self) -> str:
        return self.buffer.getvalue().decode()

    def all(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.buffer.getvalue().splitlines()]

    def of(self, logger: str) -> list[dict[str, Any]]:
        return [line for line in self.all() if line.get("logger") == logger]


@pytest.fixture
def log_lines(app: Litestar) -> Iterator[LogLines]:
    """Depends on ``app`` so that it attaches after the app configured logging."""
    with captured_logs() as lines:
        yield lines


@contextlib.asynccontextmanager
async def uvicorn_serving(config: uvicorn.Config) -> AsyncIterator[None]:
    """A real uvicorn in this event loop, started before the block and stopped after it."""
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        if serving.done():
            serving.result()
        assert time.monotonic() < deadline, "uvicorn did not start"
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        await serving


@contextlib.contextmanager
def captured_logs() -> Iterator[LogLines]:
    """Capture from here on; enter it after the last app was built (building one reconfigures
    logging)."""
    lines = LogLines()
    with captured(lines.buffer):
        yield lines


@pytest.fixture(scope="session")
def project_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture
async def superuser(client: Client, settings: Settings) -> dict[str, str]:
    """A platform superuser's bearer header (made through the same use case as the CLI)."""
    return await superuser_headers(client, settings)


async def superuser_headers(client: Client, settings: Settings) -> dict[str, str]:
    from tenantry.application.tenants import CreateSuperuser

    container = bootstrap.Container(settings)
    try:
        async with container.unit_of_work() as uow:
            await CreateSuperuser(container.identity(uow))(
                username="root", email="root@platform.example", password="platform Secret 99"
            )
    finally:
        await container.close()
        await container.alchemy.get_engine().dispose()
    response = await client.post(
        "/api/v1/auth/login",
        json={"tenant": "platform", "login": "root", "password": "platform Secret 99"},
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}

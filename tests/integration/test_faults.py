"""Faults on real engines: PostgreSQL restarted under load, Redis down, S3 down.

The engines these tests break are their own, so the session's engines are never disturbed:
one PostgreSQL cluster for this module, where each test gets a fresh database copied from a
migrated template, and a Redis or S3 server per test. A worker killed mid-task is
tests/e2e/test_worker_kill.py.

No assertion here reads a clock: a request that hangs instead of failing fast shows up as a
wait that never ends (each has a deadline far above the API's timeouts), and the order of
events (answered while the server was still frozen or down) says which timeout fired.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import httpx
import msgspec
import psutil
import pytest
import uvicorn
from litestar.testing import AsyncTestClient
from moto.server import ThreadedMotoServer
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from tenantry import bootstrap
from tenantry.application.tasks.maintenance import ReconcileTasks
from tenantry.application.tasks.runner import SERVICE_UNAVAILABLE
from tenantry.config import Settings
from tenantry.infrastructure.db import database, migrations
from tenantry.infrastructure.db.rls import APP_ROLE
from tenantry.infrastructure.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from tenantry.presentation.errors import QUERY_CANCELED

from ..conftest import Client, LogLines, captured_logs, plain_url, uvicorn_serving
from .identity import PASSWORD, bearer, create_tenant, login, owner_session
from .test_health import assert_problem
from .test_tasks import app_with, submit, task_settings, wait_for

# One worker takes the whole module, so its PostgreSQL cluster starts once.
pytestmark = [pytest.mark.timeout(90), pytest.mark.xdist_group("faults")]

# The outage settings of the API under test: a request that needs the database gives up
# after these (seconds).
CONNECT_TIMEOUT = 1
POOL_TIMEOUT = 1
TEMPLATE = "faults_template"


async def until(
    condition: Callable[[], Awaitable[bool] | bool], what: str, limit: float = 20
) -> None:
    deadline = time.monotonic() + limit
    while True:
        outcome = condition()
        if isinstance(outcome, Awaitable):
            outcome = await outcome
        if outcome:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


# PostgreSQL.


@pytest.fixture(scope="module")
async def cluster() -> AsyncIterator[EmbeddedPostgres]:
    """The PostgreSQL these tests stop, restart and freeze, with a migrated template database.

    Not under tmp_path: run as root, PostgreSQL runs as its own user, and any pytest session
    starting meanwhile makes pytest's temporary root private again, failing a restart."""
    with tempfile.TemporaryDirectory(prefix="tenantry-faults-") as root:
        server = EmbeddedPostgres(Path(root) / "postgres")
        await asyncio.to_thread(server.start)
        try:
            await asyncio.to_thread(server.ensure_database, TEMPLATE)
            await asyncio.to_thread(migrations.upgrade, server.url(TEMPLATE))
            yield server
        finally:
            await asyncio.to_thread(server.stop)


class Database:
    """One test's database in the module's cluster; stopping it stops the whole cluster."""

    def __init__(self, cluster: EmbeddedPostgres, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.running = True

    @property
    def pid(self) -> int | None:
        return self.cluster.pid

    def url(self) -> str:
        return self.cluster.url(self.name)

    def stop(self) -> None:
        self.cluster.stop()
        self.running = False

    def start(self) -> None:
        self.cluster.start()
        self.running = True


@pytest.fixture
async def postgres(cluster: EmbeddedPostgres) -> AsyncIterator[Database]:
    """A fresh migrated database of this test alone: a copy of the template, made in
    milliseconds where a new cluster and its migrations take seconds."""
    name = f"faults_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(plain_url(cluster.url()))
    try:
        await admin.execute(f'create database "{name}" template "{TEMPLATE}"')
    finally:
        await admin.close()
    database = Database(cluster, name)
    try:
        yield database
    finally:
        if not database.running:  # a test that failed mid-outage
            await asyncio.to_thread(database.start)
        admin = await asyncpg.connect(plain_url(cluster.url()))
        try:
            await admin.execute(f'drop database "{name}" with (force)')
        finally:
            await admin.close()


def app_role_url(server: Database) -> str:
    return make_url(server.url()).set(username=APP_ROLE).render_as_string(hide_password=False)


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, postgres: Database, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, LogLines]]:
    """The API on that PostgreSQL (and the session's Redis) behind a real uvicorn in this
    process: real sockets and a real pool under concurrent load; its log for the assertions."""
    port = free_port()
    config = msgspec.structs.replace(
        settings,
        database_url=app_role_url(postgres),
        db_pool_size=5,
        db_max_overflow=0,
        db_connect_timeout=CONNECT_TIMEOUT,
        db_pool_timeout=POOL_TIMEOUT,
        **overrides,
    )
    app = bootstrap.create_app(config)
    server = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    with captured_logs() as lines:
        async with (
            uvicorn_serving(server),
            # No request may hang: the client's own timeout is far above the API's.
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as client,
        ):
            yield client, lines


def unhandled(lines: LogLines) -> list[dict[str, Any]]:
    return [line for line in lines.all() if line.get("message") == "unhandled error"]


@pytest.fixture
async def api(
    settings: Settings, postgres: Database, clean_state: None
) -> AsyncIterator[tuple[httpx.AsyncClient, LogLines]]:
    async with serving(settings, postgres) as served:
        yield served


@dataclass
class Outcome:
    sent: float
    received: float
    status: int
    response: httpx.Response


@dataclass
class Load:
    """Clients that create projects and read each one back, until told to stop."""

    client: httpx.AsyncClient
    headers: dict[str, str]
    outcomes: list[Outcome] = field(default_factory=list)
    created: set[str] = field(default_factory=set)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        sent = time.monotonic()
        response = await self.client.request(method, path, headers=self.headers, **kwargs)
        self.outcomes.append(Outcome(sent, time.monotonic(), response.status_code, response))
        return response

    async def one_client(self, number: int) -> None:
        for attempt in range(10_000):
            if self.stop.is_set():
                return
            created = await self.request(
                "POST", "/api/v1/projects", json={"name": f"load {number}.{attempt}"}
            )
            if created.status_code == 201:
                self.created.add(created.json()["id"])
                await self.request("GET", f"/api/v1/projects/{created.json()['id']}")
            # Half a breath between rounds, so an outage is many requests, not thousands.
            await asyncio.sleep(0.01)

    def between(self, start: float, end: float = float("inf")) -> list[Outcome]:
        return [o for o in self.outcomes if o.sent >= start and o.received <= end]

    async def count_after(self, start: float, count: int, what: str) -> list[Outcome]:
        await until(lambda: len(self.between(start)) >= count, what)
        return self.between(start)


async def test_postgres_restarted_under_load(
    api: tuple[httpx.AsyncClient, LogLines], postgres: Database
) -> None:
    client, lines = api
    await create_tenant(client, "acme")
    load = Load(client, bearer(await login(client, "acme", "olive")))
    # Fewer clients than pooled connections: once the server is back, no request waits for a
    # connection, so every answer after the recovery must be a success.
    clients = [asyncio.create_task(load.one_client(number)) for number in range(4)]
    try:
        await load.count_after(0, 40, "the load to warm up")

        await asyncio.to_thread(postgres.stop)
        down = time.monotonic()
        # Forty answers while the server is down: a request that hung instead would stall its
        # client and this wait would never end.
        await load.count_after(down, 40, "requests during the outage")
        restarting = time.monotonic()
        outage = load.between(down, restarting)
        assert outage
        for outcome in outage:
            problem = assert_problem(outcome.response, 503)
            assert outcome.response.headers["retry-after"] == "5"
            assert problem["detail"] == "A dependency is unavailable; try again shortly."

        await asyncio.to_thread(postgres.start)
        await until(
            lambda: any(o.status == 201 for o in load.between(restarting)), "a write to succeed"
        )
        recovered = max(o.sent for o in load.between(restarting) if o.status == 201)
        after = await load.count_after(recovered, 40, "requests after the recovery")
        assert {o.status for o in after} <= {200, 201}
    finally:
        load.stop.set()
        await asyncio.gather(*clients)

    # Never a 500 (nor a 409 or 404 from a misread outage): served, or 503.
    assert {o.status for o in load.outcomes} <= {200, 201, 503}
    assert unhandled(lines) == []
    connection = await asyncpg.connect(plain_url(postgres.url()))
    try:
        stored = {str(row["id"]) for row in await connection.fetch("select id from projects")}
    finally:
        await connection.close()
    # Every write acknowledged with a 201 survived; an answer lost in the outage may have
    # committed too (a 503 promises nothing), so the table may hold more.
    assert load.created
    assert load.created <= stored


async def test_connections_outlived_by_a_quiet_restart_are_replaced(
    api: tuple[httpx.AsyncClient, LogLines], postgres: Database
) -> None:
    client, _ = api
    headers = await owner_session(client, "acme")

    async def burst() -> set[int]:
        responses = await asyncio.gather(
            *(client.get("/api/v1/projects", headers=headers) for _ in range(10))
        )
        return {response.status_code for response in responses}

    assert await burst() == {200}  # the pool now holds open connections
    await asyncio.to_thread(postgres.stop)
    await asyncio.to_thread(postgres.start)
    # No request saw the outage, so nothing invalidated the pool: the check at checkout must.
    assert await burst() == {200}


async def test_a_hung_database_costs_the_pool_timeout_not_a_hang(
    api: tuple[httpx.AsyncClient, LogLines], postgres: Database
) -> None:
    client, _ = api
    headers = await owner_session(client, "acme")

    async def get() -> int:
        return (await client.get("/api/v1/projects", headers=headers)).status_code

    async def pool_full() -> bool:
        assert set(await asyncio.gather(*(get() for _ in range(20)))) == {200}
        return await app_connections(postgres) == 5

    await until(pool_full, "the pool to hold all its connections")
    postmaster = psutil.Process(postgres.pid)
    frozen = [postmaster, *postmaster.children(recursive=True)]  # the backends included
    signal_all(frozen, psutil.Process.suspend)
    try:
        # Five requests take the pool's five connections and wait on the frozen server; the
        # other three find no connection within the pool timeout, so they are answered while
        # the server is still frozen: no other timeout could end them before it thaws.
        requests = [asyncio.create_task(get()) for _ in range(8)]
        await until(lambda: sum(r.done() for r in requests) >= 3, "the pool timeouts")
        assert [r.result() for r in requests if r.done()] == [503, 503, 503]
    finally:
        signal_all(frozen, psutil.Process.resume)
    assert sorted(await asyncio.gather(*requests)) == [200] * 5 + [503] * 3


async def test_a_statement_past_the_timeout_is_a_503_not_a_hang(
    settings: Settings, postgres: Database, clean_state: None
) -> None:
    async with serving(settings, postgres, db_statement_timeout=1.0) as (client, lines):
        headers = await owner_session(client, "acme")
        project = await client.post("/api/v1/projects", json={"name": "p"}, headers=headers)
        path = f"/api/v1/projects/{project.json()['id']}"
        postmaster = psutil.Process(postgres.pid)
        frozen = [postmaster, *postmaster.children(recursive=True)]
        signal_all(frozen, psutil.Process.suspend)
        try:
            # A frozen server cannot cancel anything: only the driver's own deadline can end
            # this request before the server thaws, and it must.
            response = await client.get(path, headers=headers)
        finally:
            signal_all(frozen, psutil.Process.resume)
        assert_problem(response, 503)
        # The timed-out connection is not handed to the next request.
        await until(
            lambda: _status(client.get(path, headers=headers), 200), "the API to serve again"
        )
        assert unhandled(lines) == []


async def _status(request: Awaitable[httpx.Response], expected: int) -> bool:
    return (await request).status_code == expected


async def test_the_server_cancels_a_statement_past_the_timeout(
    settings: Settings, postgres: Database
) -> None:
    config = msgspec.structs.replace(
        settings, database_url=app_role_url(postgres), db_statement_timeout=0.5
    )
    engine = database.alchemy_config(config).get_engine()
    try:
        async with engine.connect() as connection:
            with pytest.raises(DBAPIError) as raised:
                await connection.execute(text("select pg_sleep(5)"))
        # The server's statement_timeout ended it (SQLSTATE 57014), not the driver's deadline
        # (which raises a timeout of its own) nor the sleep running out.
        assert getattr(raised.value.orig, "sqlstate", None) == QUERY_CANCELED
    finally:
        await engine.dispose()


def signal_all(processes: list[psutil.Process], action: Callable[[psutil.Process], None]) -> None:
    for process in processes:
        # A backend that just ended (the one that counted connections, say) needs no signal.
        with contextlib.suppress(psutil.NoSuchProcess):
            action(process)


async def app_connections(server: Database) -> int:
    connection = await asyncpg.connect(plain_url(server.url()))
    try:
        count: int = await connection.fetchval(
            "select count(*) from pg_stat_activity"
            " where usename = $1 and datname = current_database()",
            APP_ROLE,
        )
    finally:
        await connection.close()
    return count


# Redis.


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis", persist=False)
    server.start()
    yield server
    server.stop()


def worker_said(lines: LogLines, message: str) -> bool:
    return any(line["message"] == message for line in lines.of("tenantry.worker"))


async def test_redis_down(
    settings: Settings, redis_server: EmbeddedRedis, clean_state: None
) -> None:
    config = msgspec.structs.replace(
        task_settings(settings), redis_url=redis_server.url, db_connect_timeout=1.0
    )
    async with AsyncTestClient(app=app_with(config, with_worker=True)) as client:
        owner = await owner_session(client, "acme")
        with captured_logs() as lines:
            redis_server.stop()
            await until(
                lambda: worker_said(lines, "redis unavailable; the worker waits for it"),
                "the worker to notice",
            )
            await serves_without_redis(client, owner, lines)
            task = await submit(client, owner, "test.noop")
            assert task["status"] == "pending"
            assert any(
                line["message"] == "task not enqueued; the reconciler will"
                and line["task_id"] == task["id"]
                for line in lines.of("tenantry.jobs")
            )
            assert (await client.get(f"/api/v1/tasks/{task['id']}", headers=owner)).json()[
                "status"
            ] == "pending"

            redis_server.start()
            await until(
                lambda: worker_said(lines, "redis is back; the worker takes jobs again"),
                "the worker to resume",
            )
        # The enqueue was lost with Redis: the worker's reconciler (every 30 s, for tasks
        # pending over 30 s) finds the row; run here at once, over the same rows and queue.
        container = bootstrap.Container(config)
        await container.start()
        try:
            reconcile = ReconcileTasks(
                units=container.unit_of_work,
                queue=container.job_queue,
                clock=container.clock,
                stale_after=timedelta(0),
            )
            assert await reconcile() == 1
        finally:
            await container.close()
            await container.alchemy.get_engine().dispose()
        done = await wait_for(client, owner, task["id"], "completed")
        assert done["progress"] == 100


async def serves_without_redis(client: Client, owner: dict[str, str], lines: LogLines) -> None:
    assert (await client.get("/health")).status_code == 200
    ready = await client.get("/ready")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["redis"]["status"] == "error"
    assert checks["database"]["status"] == "ok"

    project = await client.post("/api/v1/projects", headers=owner, json={"name": "Apollo"})
    assert project.status_code == 201, project.text
    project_id = project.json()["id"]
    document = await client.post(
        f"/api/v1/projects/{project_id}/documents",
        headers=owner,
        json={"title": "Plan", "content": "go to the moon"},
    )
    assert document.status_code == 201, document.text
    projects = (await client.get("/api/v1/projects", headers=owner)).json()
    assert [p["id"] for p in projects["items"]] == [project_id]
    documents = await client.get(f"/api/v1/projects/{project_id}/documents", headers=owner)
    assert [d["id"] for d in documents.json()["items"]] == [document.json()["id"]]

    # The login limiter fails open (docs/operations.md, Identity), and says so in the log.
    response = await client.post(
        "/api/v1/auth/login", json={"tenant": "acme", "login": "olive", "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    errors = [line for line in lines.of("tenantry.rate_limit") if line["level"] == "error"]
    assert errors
    assert errors[0]["message"] == "rate limiter unavailable; allowing the attempt"


# S3.


async def test_a_task_whose_store_is_down_is_retried_until_it_is_back(
    settings: Settings, clean_state: None
) -> None:
    """A project export's output meets S3 down: the attempt fails as a service out of reach
    (no server named to the task's users) and is tried again, and the task completes once
    the store is back, with its file."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    config = msgspec.structs.replace(
        on_s3(task_settings(settings), f"http://127.0.0.1:{port}"),
        task_retry_backoff_seconds=1,
        task_max_attempts=5,
    )
    try:
        async with AsyncTestClient(app=app_with(config, with_worker=True)) as client:
            owner = await owner_session(client, "acme")
            project = await client.post("/api/v1/projects", headers=owner, json={"name": "A"})
            server.stop()
            task = await submit(
                client, owner, "project.export", config={"project_id": project.json()["id"]}
            )
            retried = await wait_for_retry(client, owner, task["id"])
            assert retried["error_message"] == SERVICE_UNAVAILABLE
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            server.start()
            done = await wait_for(client, owner, task["id"], "completed", "failed")
            assert done["status"] == "completed", done
            [output] = done["output_files"]
            content = await client.get(f"/api/v1/files/{output}/content", headers=owner)
            assert content.status_code == 200
            assert content.content.startswith(b"PK")
    finally:
        server.stop()


async def wait_for_retry(client: Client, headers: dict[str, str], task_id: str) -> dict[str, Any]:
    """The task once an attempt of it has failed and another is due."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        task: dict[str, Any] = (
            await client.get(f"/api/v1/tasks/{task_id}", headers=headers)
        ).json()
        if task["retry_count"] >= 1:
            return task
        await asyncio.sleep(0.1)
    raise AssertionError(f"task {task_id} was never retried: {task}")


async def test_s3_refusing_is_a_503_with_its_reason_logged(
    settings: Settings, clean_state: None, s3_url: str
) -> None:
    """The store answers but refuses (its bucket deleted under the API, as a misconfigured
    policy or credentials would): an upload is a 503 to retry, the store's reason in the log
    alone, nothing kept; once the bucket is back, uploads succeed, no restart."""
    config = on_s3(settings, s3_url)
    s3 = s3_client(config)
    async with AsyncTestClient(app=bootstrap.create_app(config)) as client:
        owner = await owner_session(client, "acme")
        usage = (await client.get("/api/v1/files/usage", headers=owner)).json()
        s3.delete_bucket(Bucket=config.s3_bucket)
        with captured_logs() as lines:
            # A small file (one PUT) and one past the part size (a multipart upload).
            refused = [
                await client.post("/api/v1/files", headers=owner, files=text_file(size))
                for size in (1000, 6 * 1024 * 1024)
            ]
        for response in refused:
            assert_retry_later(response)
            assert "NoSuchBucket" not in response.text
        assert unavailable_causes(lines) == ["object store refused (NoSuchBucket)"] * len(refused)
        assert (await client.get("/api/v1/files/usage", headers=owner)).json() == usage

        s3.create_bucket(Bucket=config.s3_bucket)
        again = await client.post("/api/v1/files", headers=owner, files=text_file(1000))
        assert again.status_code == 201, again.text
        content = await client.get(f"/api/v1/files/{again.json()['id']}/content", headers=owner)
        assert content.status_code == 200
        s3.delete_object(Bucket=config.s3_bucket, Key=s3_keys(s3, config)[0])
        s3.delete_bucket(Bucket=config.s3_bucket)
        gone = await client.get(f"/api/v1/files/{again.json()['id']}/content", headers=owner)
        assert_problem(gone, 503)


def on_s3(settings: Settings, endpoint: str) -> Settings:
    """``settings`` storing files on the moto server at ``endpoint``, in a bucket of their own,
    with parts as small as S3 allows."""
    return msgspec.structs.replace(
        settings,
        storage_backend="s3",
        s3_endpoint_url=endpoint,
        s3_bucket=f"faults-{uuid.uuid4().hex[:12]}",
        s3_access_key_id="test",
        s3_secret_access_key="test",
        s3_part_size_mib=5,
    )


def assert_retry_later(response: httpx.Response) -> None:
    """A 503 problem that tells the client when to try again."""
    assert_problem(response, 503)
    assert response.headers["retry-after"] == "5"


def unavailable_causes(lines: LogLines) -> list[str]:
    """The causes logged with each 503 (which the client does not see)."""
    return [
        line["error"] for line in lines.all() if line.get("message") == "dependency unavailable"
    ]


def s3_keys(s3: Any, config: Settings) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=config.s3_bucket).get("Contents", [])]


def s3_client(config: Settings) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=config.s3_endpoint_url,
        region_name=config.s3_region,
        aws_access_key_id=config.s3_access_key_id,
        aws_secret_access_key=config.s3_secret_access_key,
    )


def text_file(size: int, name: str = "notes.txt") -> dict[str, tuple[str, bytes, str]]:
    return {"file": (name, b"all work and no play\n" * (size // 21 + 1), "text/plain")}


async def test_s3_down(settings: Settings, clean_state: None) -> None:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    config = on_s3(settings, f"http://127.0.0.1:{port}")
    try:
        async with AsyncTestClient(app=bootstrap.create_app(config)) as client:
            owner = await owner_session(client, "acme")
            first = await client.post("/api/v1/files", headers=owner, files=text_file(1000))
            assert first.status_code == 201, first.text
            usage = (await client.get("/api/v1/files/usage", headers=owner)).json()

            server.stop()
            # A small file (one PUT) and one past the part size (a multipart upload).
            for size in (1000, 6 * 1024 * 1024):
                # botocore's three attempts back off for up to 6 s in all, then give up.
                response = await client.post("/api/v1/files", headers=owner, files=text_file(size))
                assert_problem(response, 503)
                assert response.headers["retry-after"] == "5"
            listed = (await client.get("/api/v1/files", headers=owner)).json()
            assert [f["id"] for f in listed["items"]] == [first.json()["id"]]
            assert (await client.get("/api/v1/files/usage", headers=owner)).json() == usage
            ready = (await client.get("/ready")).json()
            assert ready["checks"]["storage"]["status"] == "error"
            # A download fails before its answer starts, not as a 200 cut short.
            content = f"/api/v1/files/{first.json()['id']}/content"
            assert_problem(await client.get(content, headers=owner), 503)

            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            server.start()
            again = await client.post("/api/v1/files", headers=owner, files=text_file(1000))
            assert again.status_code == 201, again.text
            listed = (await client.get("/api/v1/files", headers=owner)).json()
            assert listed["total"] == 2
            tenant_id = (await client.get("/api/v1/auth/me", headers=owner)).json()["tenant_id"]
        # In the bucket: the two files, not a byte of the refused uploads.
        s3 = s3_client(config)
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=config.s3_bucket)["Contents"]}
        assert keys == {f"tenants/{tenant_id}/files/{file.json()['id']}" for file in (first, again)}
        assert s3.list_multipart_uploads(Bucket=config.s3_bucket).get("Uploads", []) == []
    finally:
        server.stop()

"""One endpoint of the product in this process, without HTTP: its CPU per request, and where
it goes.

    uv run python bench/inprocess.py --scenario upload [--store thread|loop|none]
        [--requests 300] [--rounds 3] [--profile FILE] [--database-url URL] [--redis-url URL]

A database of its own (dropped at the end) on the given PostgreSQL, or on an embedded one,
migrated by `tenantry db upgrade`; the app built by `bootstrap.create_app` from the settings
`tenantry serve` would read, as it builds it (the start-up heap frozen), its lifespan entered,
a tenant and its owner made through the API; then the app called as an ASGI app with a scope
and a `receive` of our own (an upload: a 256 KiB text file in a multipart body, in 64 KiB
messages; a document: a POST of one into a project; an update: a PATCH carrying the ETag of the
previous answer as If-Match; a delete: a project of its own each, made with two documents
before the rounds; health: GET /health). For health and upload, before each round, the same
requests go to the suite's bare baseline app, bench/baseline_app.py, in this process too (for
upload, as the suite's upload_row asks it: the token verified, the file stored with its row):
what the product costs over a bare Litestar app doing the same work, without the server or the
network. Each round's requests are timed with `time.process_time()`: the process's CPU, its
storage and hash threads included; with `time.thread_time()`: the event loop's thread alone
(what bounds one process's rate); and, when PostgreSQL runs on this machine, its processes' CPU
over the same rounds (from /proc: every postgres process, so other databases' work on the
server counts too). Access lines go to a file of the run. `--store` changes the product's local
store's write for the run (not the bare app's), to tell the file's share from the rest: `loop`
writes it on the event loop (its thread hop a plain call), `none` reads the chunks and stores
nothing. `--profile` runs one more round under cProfile, saves its stats and prints the
functions with the most time of their own. See bench/README.md (methods 17, 18, 21, 53 and
64).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import baseline_app
import httpx
import uvloop
from common import BenchError, Engines, admin_execute, bench_main, free_port, tenantry
from litestar import Litestar
from suite import engines_for
from tasks import product_env, run_setup_command
from upload import LOGIN, TENANT

from tenantry import bootstrap
from tenantry.config import Settings, load_settings
from tenantry.infrastructure.db.rls import APP_ROLE
from tenantry.infrastructure.observability.logging import configure_logging
from tenantry.infrastructure.secrets.environment import keyring_file
from tenantry.infrastructure.storage import local

SCENARIOS = ("upload", "get", "create", "document", "update", "delete", "login", "health")
# µs of CPU per request by round: this process's, its event loop's (the thread that calls the
# app), PostgreSQL's (none: not on this machine), and the bare app's (health and upload).
Measured = tuple[list[float], list[float], list[float], list[float]]
STORES = ("thread", "loop", "none")
UPLOAD_BYTES = 256 * 1024
MESSAGE_BYTES = 64 * 1024
BOUNDARY = "inprocessboundary"
WARM_UP = 50
TOP = 25
# The tenant's quota: far above all the uploads of a run.
QUOTA_BYTES = 2**50


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=SCENARIOS, default="upload")
    parser.add_argument(
        "--store", choices=STORES, default="thread", help="the upload's file (default: thread)"
    )
    parser.add_argument("--requests", type=int, default=300, help="per round (default 300)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--profile", type=Path, help="cProfile stats of one more round, here")
    parser.add_argument("--database-url", help="a PostgreSQL superuser's URL (else embedded)")
    parser.add_argument("--redis-url", help="a Redis database's URL (else embedded)")
    return parser.parse_args()


def multipart() -> bytes:
    text = (b"In process, a line of text for the upload to store.\n" * 6000)[:UPLOAD_BYTES]
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="a.txt"\r\nContent-Type: text/plain\r\n\r\n'
        ).encode()
        + text
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


class Request:
    """One request, called again and again: its scope, its body's messages and its answer."""

    def __init__(
        self, method: str, path: str, headers: dict[str, str], body: bytes, expected: int
    ) -> None:
        self.method, self.path, self.body, self.expected = method, path, body, expected
        self.headers = [(b"host", b"inprocess")] + [
            (name.lower().encode(), value.encode()) for name, value in headers.items()
        ]
        if body:
            self.headers.append((b"content-length", str(len(body)).encode()))

    async def __call__(self, app: Litestar) -> None:
        messages = [
            {
                "type": "http.request",
                "body": self.body[start : start + MESSAGE_BYTES],
                "more_body": start + MESSAGE_BYTES < len(self.body),
            }
            for start in range(0, max(len(self.body), 1), MESSAGE_BYTES)
        ]
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
                self.answered(dict(message.get("headers", [])))

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": self.method,
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": self.headers,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        await app(scope, receive, send)
        if statuses != [self.expected]:
            raise BenchError(f"{self.method} {self.path}: expected {self.expected}, got {statuses}")

    def answered(self, headers: dict[bytes, bytes]) -> None:
        """What the next call takes from this one's response headers: nothing."""


class Deletes(Request):
    """A DELETE of the next project of a list at each call, each with its documents."""

    def __init__(self, paths: list[str], headers: dict[str, str]) -> None:
        super().__init__("DELETE", paths[0], headers, b"", 204)
        self.paths = paths[1:]

    def answered(self, headers: dict[bytes, bytes]) -> None:  # noqa: ARG002 - the hook's signature
        if self.paths:
            self.path = self.paths.pop()


class Versioned(Request):
    """A PATCH that sends the ETag of its previous answer as If-Match: each call is the next
    version's update, as a client holding the row would send it."""

    def answered(self, headers: dict[bytes, bytes]) -> None:
        self.headers = [
            (name, headers[b"etag"] if name == b"if-match" else value)
            for name, value in self.headers
        ]


@dataclass
class Prepared:
    request: Request
    # The tenant made and its owner, signed in.
    tenant_id: UUID
    owner_id: UUID


async def prepared(app: Litestar, scenario: str, calls: int) -> Prepared:
    """The tenant, its owner and what the scenario needs for ``calls`` requests, made through
    the API."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://inprocess") as client:
        if (created := await client.post("/api/v1/tenants", json=TENANT)).status_code != 201:
            raise BenchError(f"POST /api/v1/tenants: {created.status_code}: {created.text}")
        login = (await client.post("/api/v1/auth/login", json=LOGIN)).json()
        bearer = {"authorization": f"Bearer {login['access_token']}"}
        me = (await client.get("/api/v1/auth/me", headers=bearer)).json()
        request = await scenario_request(client, scenario, calls, bearer)
        return Prepared(request, UUID(me["tenant_id"]), UUID(me["id"]))


async def scenario_request(
    client: httpx.AsyncClient, scenario: str, calls: int, bearer: dict[str, str]
) -> Request:
    """The request the scenario calls again and again, and what it needs made first."""
    if scenario == "health":
        return Request("GET", "/health", {}, b"", 200)
    if scenario == "login":
        body = json.dumps(LOGIN).encode()
        return Request(
            "POST", "/api/v1/auth/login", {"content-type": "application/json"}, body, 200
        )
    if scenario == "upload":
        headers = bearer | {
            "content-type": f"multipart/form-data; boundary={BOUNDARY}",
            # For the bare app, as the suite's upload_row sends them; the product ignores them.
            baseline_app.STORE_HEADER: "1",
            baseline_app.AUTHENTICATE_HEADER: "1",
        }
        return Request("POST", "/api/v1/files", headers, multipart(), 201)
    json_body = bearer | {"content-type": "application/json"}
    if scenario == "create":
        return Request("POST", "/api/v1/projects", json_body, b'{"name": "Bench"}', 201)
    if scenario == "delete":
        # As the suite's: a live project with two documents each.
        paths = []
        for _ in range(calls):
            made = await client.post("/api/v1/projects", json={"name": "Gone"}, headers=bearer)
            paths.append(f"/api/v1/projects/{made.json()['id']}")
            for title in ("one", "two"):
                document = {"title": title, "content": "c"}
                await client.post(f"{paths[-1]}/documents", json=document, headers=bearer)
        return Deletes(paths, bearer)
    project = await client.post("/api/v1/projects", json={"name": "Bench"}, headers=bearer)
    path = f"/api/v1/projects/{project.json()['id']}"
    if scenario == "document":
        body = b'{"title": "Bench", "content": "c"}'
        return Request("POST", f"{path}/documents", json_body, body, 201)
    if scenario == "update":
        versioned = json_body | {"if-match": project.headers["etag"]}
        return Versioned("PATCH", path, versioned, b'{"name": "Benched"}', 200)
    return Request("GET", path, bearer, b"", 200)


@contextlib.contextmanager
def storage_as(store: str) -> Iterator[None]:
    """The local store's write for the run: as it is, on the event loop, or none at all."""
    if store == "thread":
        yield
        return
    saved_hop, saved_put = local._in_thread, local.LocalDiskStorage.put

    async def on_the_loop(function: Callable[..., None], *arguments: Any) -> None:
        function(*arguments)

    async def nothing(_: local.LocalDiskStorage, __: str, chunks: AsyncIterator[bytes]) -> None:
        async for _chunk in chunks:
            pass

    if store == "loop":
        local._in_thread = on_the_loop
    else:
        local.LocalDiskStorage.put = nothing
    try:
        yield
    finally:
        local._in_thread, local.LocalDiskStorage.put = saved_hop, saved_put


def postgres_cpu_s() -> float | None:
    """The CPU every PostgreSQL process of this machine has used, reaped backends included
    (their parent's cutime and cstime): None when none can be seen (a server elsewhere)."""
    ticks, seen = 0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            text = stat.read_text()
            name, fields = text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1]
            if name == "postgres":
                # utime, stime, cutime, cstime: fields 14-17 of proc(5), 12-15 after the name.
                ticks += sum(int(value) for value in fields.split()[11:15])
                seen = True
    return ticks / os.sysconf("SC_CLK_TCK") if seen else None


def bare_app(
    dsn: str = "",
    tenant_id: UUID | None = None,
    owner_id: UUID | None = None,
    upload_dir: Path | None = None,
    keyring: Path | None = None,
) -> Litestar:
    """The suite's bare baseline (bench/baseline_app.py), built in this process."""
    return baseline_app.create_app(
        argparse.Namespace(
            dsn=dsn,
            tenant_id=tenant_id or uuid.uuid4(),
            owner_id=owner_id,
            upload_dir=upload_dir,
            hash_concurrency=1,
            keyring=keyring,
            cpu_claims=None,
        )
    )


# The bare app beside the product, once the product has made its tenant, or none.
BareServer = Callable[[Prepared], contextlib.AbstractAsyncContextManager[Litestar | None]]


def bare_server(engines: Engines, tmp: Path, settings: Settings, scenario: str) -> BareServer:
    """For health the bare app's /health (no database: its lifespan is not entered); for upload
    upload_row's bare server on the product's database, as the product's tenant and owner, its
    pool made by its lifespan."""

    @contextlib.asynccontextmanager
    async def beside(made: Prepared) -> AsyncIterator[Litestar | None]:
        if scenario == "health":
            yield bare_app()
        elif scenario == "upload":
            uploads = tmp / "bare-uploads"
            uploads.mkdir(exist_ok=True)
            app = bare_app(
                engines.url(APP_ROLE),
                made.tenant_id,
                made.owner_id,
                uploads,
                keyring_file(settings),
            )
            async with app.lifespan():
                yield app
        else:
            yield None

    return beside


async def measure(app: Litestar, args: argparse.Namespace, beside: BareServer) -> Measured:
    """µs of the process's CPU per request, and of PostgreSQL's, one figure per round."""
    async with app.lifespan():
        calls = WARM_UP + args.requests * (args.rounds + (1 if args.profile else 0))
        made = await prepared(app, args.scenario, calls)
        request = made.request
        for _ in range(WARM_UP):
            await request(app)
        async with beside(made) as bare:
            if bare is not None:
                for _ in range(WARM_UP):
                    await request(bare)
            return await timed(app, request, bare, args)


async def timed(
    app: Litestar, request: Request, bare: Litestar | None, args: argparse.Namespace
) -> Measured:
    """Each round: the bare app's requests first (when there is one), then the product's."""
    rounds: Measured = ([], [], [], [])
    for _ in range(args.rounds):
        if bare is not None:
            started = time.process_time()
            for _ in range(args.requests):
                await request(bare)
            rounds[3].append((time.process_time() - started) / args.requests * 1e6)
        started, postgres = time.process_time(), postgres_cpu_s()
        loop_started = time.thread_time()
        for _ in range(args.requests):
            await request(app)
        rounds[0].append((time.process_time() - started) / args.requests * 1e6)
        rounds[1].append((time.thread_time() - loop_started) / args.requests * 1e6)
        if postgres is not None and (after := postgres_cpu_s()) is not None:
            rounds[2].append((after - postgres) / args.requests * 1e6)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.requests):
            await request(app)
        profiler.disable()
        profiler.dump_stats(args.profile)
    return rounds


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="tenantry-inprocess-"))
    try:
        with engines_for(args, tmp, uuid.uuid4().hex[:8]) as engines:
            asyncio.run(admin_execute(engines, f'create database "{engines.database}"'))
            try:
                rounds, loop, postgres, bare = measured(args, engines, tmp)
            finally:
                drop = f'drop database if exists "{engines.database}" with (force)'
                asyncio.run(admin_execute(engines, drop))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "scenario": args.scenario,
        "store": args.store if args.scenario == "upload" else None,
        "requests_per_round": args.requests,
        "cpu_us_per_request": rounds,
        "median_cpu_us": statistics.median(rounds),
        "loop_cpu_us_per_request": loop,
        "median_loop_cpu_us": statistics.median(loop),
        "postgres_cpu_us_per_request": postgres,
        "median_postgres_cpu_us": statistics.median(postgres) if postgres else None,
        "bare_cpu_us_per_request": bare,
        "median_bare_cpu_us": statistics.median(bare) if bare else None,
        "profile": str(args.profile) if args.profile else None,
    }


def measured(args: argparse.Namespace, engines: Engines, tmp: Path) -> Measured:
    env = product_env(engines, tmp, free_port()) | {
        "TENANTRY_STORAGE_BACKEND": "local",
        "TENANTRY_TENANT_QUOTA_BYTES": str(QUOTA_BYTES),
    }
    setup_log = tmp / "setup.log"
    run_setup_command(tenantry("keys", "rotate"), env, tmp, setup_log)
    owner_env = env | {"TENANTRY_DATABASE_URL": engines.url()}
    run_setup_command(tenantry("db", "upgrade"), owner_env, tmp, setup_log)
    settings = load_settings(environ=env, env_file=None)
    # As `tenantry serve` makes it: the start-up heap frozen out of the garbage collector's
    # sight, or full collections walking it would be a large share of the figures.
    app = bootstrap.create_app(settings, freeze_heap=True)
    with (tmp / "access.log").open("wb") as lines:
        configure_logging(settings, stream=lines)
        with storage_as(args.store):
            beside = bare_server(engines, tmp, settings, args.scenario)
            return uvloop.run(measure(app, args, beside))


def report(result: dict[str, Any], _stamp: str) -> bool:
    store = f", store {result['store']}" if result["store"] else ""
    rounds = result["cpu_us_per_request"]
    figures = ", ".join(f"{value:.0f}" for value in rounds)
    print(
        f"{result['scenario']}{store}: {result['median_cpu_us']:.0f} µs of CPU per request "
        f"(median of {len(rounds)} rounds of {result['requests_per_round']}: {figures})"
    )
    if loop := result["loop_cpu_us_per_request"]:
        figures = ", ".join(f"{value:.0f}" for value in loop)
        print(
            f"the event loop's thread: {result['median_loop_cpu_us']:.0f} µs of CPU per request "
            f"({figures})"
        )
    if postgres := result["postgres_cpu_us_per_request"]:
        figures = ", ".join(f"{value:.0f}" for value in postgres)
        print(
            f"PostgreSQL (every postgres process of this machine): "
            f"{result['median_postgres_cpu_us']:.0f} µs of CPU per request ({figures})"
        )
    if bare := result["bare_cpu_us_per_request"]:
        figures = ", ".join(f"{value:.0f}" for value in bare)
        print(
            f"the bare app (bench/baseline_app.py; for upload as upload_row asks it), each "
            f"round just before: "
            f"{result['median_bare_cpu_us']:.0f} µs of CPU per request ({figures})"
        )
    if result["profile"]:
        stats = pstats.Stats(result["profile"], stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(TOP)
    return True


if __name__ == "__main__":
    arguments = parse_args()
    sys.exit(bench_main("inprocess", lambda _stamp: run(arguments), report))

"""The bare baseline of bench/projects.py and bench/suite.py: Litestar and asyncpg, no product code.

It answers at the product's paths with the product's SQL, as the same database role under the
same row level security, for one tenant fixed at start-up: no authentication (unless a
get-by-id asks for it, see AUTHENTICATE_HEADER), no ORM, no dependency injection, no logging.
Besides the two project reads it has the rest of the suite's endpoints: /health, a login that
verifies the stored argon2 hash, a project insert, a project update conditional on its version
(If-Match), a project soft delete with its documents, and an upload that streams the raw
request body to a file (a plain file copy), or with STORE_HEADER stores the file with its row.
With --cpu-claims, each process pins itself to a CPU as the product's TENANTRY_CPU_PINNING
does, by the product's own helper (start-up only).
Started as

    python bench/baseline_app.py --port PORT --dsn DSN --tenant-id UUID
        [--owner-id UUID] [--upload-dir DIR] [--hash-concurrency N] [--workers N]
        [--keyring FILE] [--cpu-claims DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import os
import re
import socket
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import asyncpg
import jwt
import msgspec
import uvicorn
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from litestar import Litestar, MediaType, Request, Response, delete, get, patch, post
from litestar.exceptions import NotFoundException
from multipart import MultipartSegment, PushMultipartParser, parse_options_header
from uuid_utils.compat import uuid7
from uvicorn.supervisors import Multiprocess

from tenantry.infrastructure import cpus

HOST = "127.0.0.1"
# The product's SQLAlchemy pool keeps up to 20 connections open (TENANTRY_DB_POOL_SIZE).
POOL_MIN_SIZE = 10
POOL_MAX_SIZE = 20


# The row level security policy shows nothing until the transaction names its tenant: with SET
# LOCAL, as the product does, which a Citus coordinator passes on to the workers.
def set_tenant(tenant: str) -> str:
    return f"SET LOCAL app.tenant_id = '{UUID(tenant)}'"


COLUMNS = "id, name, description, owner_id, version, created_at, updated_at"
# Sent by the suite's authenticated get-by-id scenario (the product ignores it): the baseline
# then does the product's authentication work, bare: verify the JWT, check the user's roles.
AUTHENTICATE_HEADER = "x-baseline-authenticate"
UNAUTHORIZED = b'{"detail":"Invalid or expired credentials."}'
# What tenantry_confirm_roles raises when the caller's roles do not hold.
ROLES_NOT_CONFIRMED = "TR001"
# Sent by the suite's upload_row scenario (the product ignores it): the baseline then does what
# any server storing the upload as a file of its tenant does at the least (store_file).
STORE_HEADER = "x-baseline-store"
# The tenant's quota, as the suite sets the product's: far above what any run uploads.
TENANT_QUOTA_BYTES = 2**50
# The tenant's usage row, made at start-up where the product makes it at the first upload.
START_USAGE = (
    "insert into file_usage (tenant_id, id, used_bytes, file_count, reserved_bytes, created_at, "
    "updated_at) values ($1, $1, 0, 0, 0, now(), now()) on conflict (tenant_id, id) do nothing"
)
# The upload's one transaction, in one message of literals, as the product sends its own: the
# tenant's usage charged within its quota, then the file's row. The suite's quota is never
# reached, and this server does not tell a refusal apart (it would still write the row). A
# Citus coordinator refuses a distributed statement in the message that set the tenant: there,
# as the product does, BEGIN and the tenant go first, alone.
CITUS_INSTALLED = "select exists (select from pg_extension where extname = 'citus')"
STORE_FILE = (
    "update file_usage set used_bytes = used_bytes + {size}, file_count = file_count + 1, "
    "updated_at = now() where tenant_id = '{tenant}' and id = '{tenant}' "
    "and used_bytes + reserved_bytes + {size} <= {quota}; "
    "insert into files (tenant_id, id, original_filename, size, content_type, sha256, metadata, "
    "storage_key, created_by, created_at, updated_at) "
    "values ('{tenant}', '{file_id}', E'{filename}', {size}, E'{content_type}', '{sha256}', "
    "'{{}}', '{key}', {owner}, '{now}', '{now}')"
)
# The product's per-request role check, same SQL.
ACTIVE_ROLES = (
    "select users.roles from users join tenants on tenants.id = users.tenant_id "
    "where users.tenant_id = $1 and users.id = $2 and users.is_active is true "
    "and tenants.status = 'active'"
)
GET_PROJECT = (
    f"select {COLUMNS} from projects "  # noqa: S608 - constant SQL, no input
    "where tenant_id = $1 and id = $2 and deleted_at is null"
)
PAGE = (
    f"select {COLUMNS} from projects "  # noqa: S608 - constant SQL, no input
    "where tenant_id = $1 and deleted_at is null "
    "order by created_at desc limit $2 offset $3"
)
COUNT = "select count(*) from projects where tenant_id = $1 and deleted_at is null"
# The product's search: advanced-alchemy's case-insensitive SearchFilter, '/' as escape.
PAGE_SEARCH = (
    f"select {COLUMNS} from projects "  # noqa: S608 - constant SQL, no input
    "where tenant_id = $1 and deleted_at is null and name ilike $4 escape '/' "
    "order by created_at desc limit $2 offset $3"
)
COUNT_SEARCH = (
    "select count(*) from projects "
    "where tenant_id = $1 and deleted_at is null and name ilike $2 escape '/'"
)
# The product's ids are UUIDv7 made by the application, its timestamps too.
INSERT_PROJECT = (
    "insert into projects (id, tenant_id, owner_id, name, description, version, created_at, "  # noqa: S608 - constant SQL, no input
    f"updated_at) values ($1, $2, $3, $4, $5, 1, $6, $6) returning {COLUMNS}"
)
# The product's update: the fields given, the version bumped, only if it is still the one read.
UPDATABLE = ("name", "description")
# The product's If-Match: an ETag, weak or strong, whose value is the version.
ETAG = re.compile(r'^(?:W/)?"(\d{1,10})"$')
PRECONDITION_REQUIRED = b'{"detail":"Send If-Match with the ETag you read."}'
PRECONDITION_FAILED = b'{"detail":"The project changed since you read it."}'
NOT_FOUND = b'{"detail":"Not found"}'
# The product's soft delete: the project, then its documents, both stamped with one instant.
SOFT_DELETE_PROJECT = (
    "update projects set deleted_at = $3, updated_at = $3 "
    "where tenant_id = $1 and id = $2 and deleted_at is null returning id"
)
SOFT_DELETE_DOCUMENTS = (
    "update documents set deleted_at = $3, updated_at = $3 "
    "where tenant_id = $1 and project_id = $2 and deleted_at is null"
)
# The product's sign-in lookups: an active tenant by slug, then its user by email or username.
ACTIVE_TENANT = "select id from tenants where slug = $1 and status = 'active'"
USER_HASH = (
    "select password_hash, is_active from users "
    "where tenant_id = $1 and (lower(email) = $2 or lower(username) = $2)"
)
UNAUTHORIZED = b'{"detail":"Invalid credentials."}'


class ProjectRead(msgspec.Struct):
    """The product's project body, field for field, in the order of COLUMNS."""

    id: UUID
    name: str
    description: str
    owner_id: UUID | None
    version: int
    created_at: datetime
    updated_at: datetime


class Page(msgspec.Struct):
    items: list[ProjectRead]
    total: int
    limit: int
    offset: int


class ProjectCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    description: str = ""


class ProjectUpdate(msgspec.Struct, forbid_unknown_fields=True):
    name: str | None = None
    description: str | None = None


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    tenant: str
    login: str
    password: str


class Stored(msgspec.Struct):
    size: int
    sha256: str


ENCODER = msgspec.json.Encoder()


@cache
def update_sql(fields: tuple[str, ...]) -> str:
    """The product's UPDATE for the fields a PATCH gives (names from UPDATABLE only), their
    values from $4 on."""
    sets = "".join(f"{field} = ${n}, " for n, field in enumerate(fields, start=4))
    return (
        f"update projects set {sets}version = version + 1, updated_at = now() "  # noqa: S608 - column names of our own
        "where tenant_id = $1 and id = $2 and deleted_at is null and version = $3 "
        f"returning {COLUMNS}"
    )


def like_pattern(text: str) -> str:
    """A substring pattern for ILIKE ... ESCAPE '/', with the wildcards in ``text`` escaped."""
    escaped = text.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"


def text_literal(text: str) -> str:
    """``text`` for an escape string (E'...'): backslashes and quotes doubled, NUL left out."""
    return text.replace("\\", "\\\\").replace("'", "''").replace("\x00", "")


def write_file(path: Path, chunks: list[bytes]) -> None:
    """As the product's local store writes an object: a hidden file, one writev, renamed into
    place (run in a thread)."""
    temporary = path.with_name(f".{path.name}.part")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        os.writev(descriptor, chunks)
    finally:
        os.close(descriptor)
    os.replace(temporary, path)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True, help="asyncpg DSN of the product's database")
    parser.add_argument("--tenant-id", type=UUID, required=True, help="the one tenant served")
    parser.add_argument("--owner-id", type=UUID, help="owner_id of the projects it creates")
    parser.add_argument(
        "--upload-dir",
        type=Path,
        help="where uploads are written, then removed (no uploads without)",
    )
    parser.add_argument(
        "--hash-concurrency",
        type=int,
        default=2,
        help="argon2 verifications at once per process, as TENANTRY_PASSWORD_HASH_CONCURRENCY",
    )
    parser.add_argument("--workers", type=int, default=1, help="API processes (default 1)")
    parser.add_argument(
        "--keyring",
        type=Path,
        help=f"the product's keyring file: get-by-id requests with {AUTHENTICATE_HEADER} verify "
        "their bearer token and check the user's roles",
    )
    parser.add_argument(
        "--cpu-claims",
        type=Path,
        help="pin each process to a CPU of its own claimed under this directory, as the "
        "product's TENANTRY_CPU_PINNING (its argon2 threads keep every CPU)",
    )
    return parser.parse_args()


def read_signing_keys(path: Path | None) -> dict[str, bytes]:
    """kid -> key of the product's keyring file (TENANTRY_KEYRING_PATH's JSON)."""
    if path is None:
        return {}
    keyring = msgspec.json.decode(path.read_bytes())
    return {key["kid"]: base64.urlsafe_b64decode(key["secret"]) for key in keyring["keys"]}


def bearer_claims(authorization: str | None, keys: dict[str, bytes]) -> tuple[UUID, UUID] | None:
    """(tenant, user) of a valid product access token, checked as bare PyJWT checks it."""
    claims = verified_claims(authorization, keys)
    try:
        return None if claims is None else (UUID(claims["tid"]), UUID(claims["sub"]))
    except (KeyError, ValueError, TypeError):
        return None


def verified_claims(authorization: str | None, keys: dict[str, bytes]) -> dict[str, Any] | None:
    """The claims of a valid product access token, checked as bare PyJWT checks it."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    try:
        key = keys[jwt.get_unverified_header(token)["kid"]]
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=["HS256"], options={"require": ["exp"]}
        )
    except (jwt.PyJWTError, KeyError):
        return None
    return claims


def confirm_roles(claims: dict[str, Any]) -> str | None:
    """The product's check of a streamed request's caller, for its write's message (the session
    live, the user active with the roles claimed, the tenant active; else TR001); None for
    claims that name no caller."""
    try:
        tenant, user = UUID(claims["tid"]), UUID(claims["sub"])
        session = f"'{UUID(claims['sid'])}'" if "sid" in claims else "null"
        roles = ", ".join(f"E'{text_literal(str(role))}'" for role in claims.get("roles", []))
    except (KeyError, ValueError, TypeError):
        return None
    return (
        f"select tenantry_confirm_roles('{tenant}', '{user}', {session}, "
        f"array[{roles}]::character varying[])"
    )


def create_app(args: argparse.Namespace) -> Litestar:
    pool: asyncpg.Pool | None = None
    citus = False
    signing_keys = read_signing_keys(args.keyring)
    tenant_id: UUID = args.tenant_id
    bind_tenant = set_tenant(str(tenant_id))
    # As the product's hasher: argon2-cffi releases the GIL, a small pool bounds its memory.
    if args.cpu_claims:
        cpus.pin_process(args.cpu_claims)
    hashes = ThreadPoolExecutor(
        max_workers=args.hash_concurrency,
        thread_name_prefix="argon2",
        initializer=cpus.unpin_thread,
    )
    hasher = PasswordHasher()  # verify reads the parameters from the stored hash

    def connections() -> asyncpg.Pool:
        assert pool is not None, "the lifespan creates the pool before the first request"
        return pool

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        nonlocal pool, citus
        pool = await asyncpg.create_pool(args.dsn, min_size=POOL_MIN_SIZE, max_size=POOL_MAX_SIZE)
        citus = await pool.fetchval(CITUS_INSTALLED)
        if args.upload_dir:
            async with pool.acquire() as connection, connection.transaction():
                await connection.execute(bind_tenant)
                await connection.execute(START_USAGE, tenant_id)
        try:
            yield
        finally:
            await pool.close()
            hashes.shutdown()

    def json(body: msgspec.Struct, status_code: int = 200) -> Response[bytes]:
        return Response(ENCODER.encode(body), status_code=status_code, media_type=MediaType.JSON)

    @get("/ready", sync_to_thread=False)
    def ready() -> dict[str, str]:
        # uvicorn accepts connections only after the lifespan has made the pool.
        return {"status": "ok"}

    @get("/health", sync_to_thread=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @post("/api/v1/auth/login", status_code=200)
    async def login(data: LoginBody) -> Response[bytes]:
        login_key = data.login.strip().lower()
        async with connections().acquire() as connection, connection.transaction():
            found = await connection.fetchval(ACTIVE_TENANT, data.tenant.strip().lower())
            row = None
            if found is not None:
                await connection.execute(set_tenant(str(found)))
                row = await connection.fetchrow(USER_HASH, found, login_key)
        if row is None or not row["is_active"]:
            return Response(UNAUTHORIZED, status_code=401, media_type=MediaType.JSON)
        try:
            await asyncio.get_running_loop().run_in_executor(
                hashes, hasher.verify, row["password_hash"], data.password
            )
        except VerificationError:
            return Response(UNAUTHORIZED, status_code=401, media_type=MediaType.JSON)
        return Response(b'{"status":"ok"}', media_type=MediaType.JSON)

    @get("/api/v1/projects/{project_id:uuid}")
    async def get_project(request: Request[Any, Any, Any], project_id: UUID) -> Response[bytes]:
        caller = None
        if AUTHENTICATE_HEADER in request.headers:
            caller = bearer_claims(request.headers.get("authorization"), signing_keys)
            if caller is None:
                return Response(UNAUTHORIZED, status_code=401, media_type=MediaType.JSON)
        async with connections().acquire() as connection, connection.transaction():
            await connection.execute(bind_tenant)
            if caller is not None and await connection.fetchval(ACTIVE_ROLES, *caller) is None:
                return Response(UNAUTHORIZED, status_code=401, media_type=MediaType.JSON)
            row = await connection.fetchrow(GET_PROJECT, tenant_id, project_id)
        if row is None:
            return Response(NOT_FOUND, status_code=404, media_type=MediaType.JSON)
        return json(ProjectRead(*row))

    @get("/api/v1/projects")
    async def list_projects(
        limit: int = 20,
        offset: int = 0,
        q: str | None = None,
        # Declared so that any other order is a 400, not silently served in this one.
        order_by: Literal["-created_at"] = "-created_at",  # noqa: ARG001
    ) -> Response[bytes]:
        async with connections().acquire() as connection, connection.transaction():
            await connection.execute(bind_tenant)
            if q:
                pattern = like_pattern(q)
                rows = await connection.fetch(PAGE_SEARCH, tenant_id, limit, offset, pattern)
                total = await connection.fetchval(COUNT_SEARCH, tenant_id, pattern)
            else:
                rows = await connection.fetch(PAGE, tenant_id, limit, offset)
                total = await connection.fetchval(COUNT, tenant_id)
        items = [ProjectRead(*row) for row in rows]
        return json(Page(items=items, total=total, limit=limit, offset=offset))

    @post("/api/v1/projects")
    async def create_project(data: ProjectCreate) -> Response[bytes]:
        now = datetime.now(UTC)
        async with connections().acquire() as connection, connection.transaction():
            await connection.execute(bind_tenant)
            row = await connection.fetchrow(
                INSERT_PROJECT, uuid7(), tenant_id, args.owner_id, data.name, data.description, now
            )
        return json(ProjectRead(*row), status_code=201)

    @patch("/api/v1/projects/{project_id:uuid}")
    async def update_project(
        request: Request[Any, Any, Any], project_id: UUID, data: ProjectUpdate
    ) -> Response[bytes]:
        expected = ETAG.match(request.headers.get("if-match", "").strip())
        if expected is None:
            return Response(PRECONDITION_REQUIRED, status_code=428, media_type=MediaType.JSON)
        values = {f: v for f in UPDATABLE if (v := getattr(data, f)) is not None}
        async with connections().acquire() as connection, connection.transaction():
            await connection.execute(bind_tenant)
            row = await connection.fetchrow(
                update_sql(tuple(values)),
                tenant_id,
                project_id,
                int(expected.group(1)),
                *values.values(),
            )
        if row is None:
            return Response(PRECONDITION_FAILED, status_code=412, media_type=MediaType.JSON)
        return Response(
            ENCODER.encode(ProjectRead(*row)),
            media_type=MediaType.JSON,
            headers={"ETag": f'"{row["version"]}"'},
        )

    @delete("/api/v1/projects/{project_id:uuid}", status_code=204)
    async def delete_project(project_id: UUID) -> None:
        now = datetime.now(UTC)
        async with connections().acquire() as connection, connection.transaction():
            await connection.execute(bind_tenant)
            if await connection.fetchval(SOFT_DELETE_PROJECT, tenant_id, project_id, now) is None:
                # A 204 handler returns nothing: the rare miss is Litestar's 404.
                raise NotFoundException
            await connection.execute(SOFT_DELETE_DOCUMENTS, tenant_id, project_id, now)

    @post("/api/v1/files")
    async def upload(request: Request[Any, Any, Any]) -> Response[bytes]:
        if STORE_HEADER in request.headers:
            return await store_file(request)
        # The whole body as it arrives, multipart envelope and all: no parsing, no thread hops,
        # only the copy to disk and its hash. Kept, as the product keeps what it stores (the
        # suite removes both servers' files after each run): a file removed at once would never
        # be written back to the disk, a cost every server that stores uploads pays.
        digest = hashlib.sha256()
        size = 0
        target = args.upload_dir / uuid.uuid4().hex
        with target.open("wb") as file:
            async for chunk in request.stream():
                file.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        return json(Stored(size=size, sha256=digest.hexdigest()), status_code=201)

    async def store_file(request: Request[Any, Any, Any]) -> Response[bytes]:
        # The multipart body parsed by the product's parser, the file field hashed on the loop
        # and written by one thread hop, then its one transaction: no sniffing, audit trail,
        # webhook outbox, logging or metrics. With AUTHENTICATE_HEADER, as the product: the
        # token verified before the body, the caller's roles confirmed in the write's message.
        check = ""
        if AUTHENTICATE_HEADER in request.headers:
            claims = verified_claims(request.headers.get("authorization"), signing_keys)
            confirm = None if claims is None else confirm_roles(claims)
            if confirm is None:
                return Response(UNAUTHORIZED, status_code=401, media_type=MediaType.JSON)
            check = f"{confirm}; "
        _, options = parse_options_header(request.headers.get("content-type", ""))
        parser = PushMultipartParser(options["boundary"], max_segment_count=16)
        digest = hashlib.sha256()
        chunks: list[bytes] = []
        field: MultipartSegment | None = None
        async for received in request.stream():
            for event in parser.parse(received):
                if isinstance(event, MultipartSegment):
                    field = event if event.name == "file" else None
                elif isinstance(event, bytes) and field is not None:
                    digest.update(event)
                    chunks.append(event)
        parser.close()
        if field is None:
            return Response(
                b'{"detail":"No file field."}', status_code=400, media_type=MediaType.JSON
            )
        file_id = uuid7()
        await asyncio.get_running_loop().run_in_executor(
            None, write_file, args.upload_dir / file_id.hex, chunks
        )
        size, sha256 = sum(map(len, chunks)), digest.hexdigest()
        store = STORE_FILE.format(
            tenant=tenant_id,
            file_id=file_id,
            filename=text_literal(field.filename or "upload"),
            content_type=text_literal(field.content_type or "application/octet-stream"),
            size=size,
            quota=TENANT_QUOTA_BYTES,
            sha256=sha256,
            key=f"bare/{file_id.hex}",
            owner=f"'{args.owner_id}'" if args.owner_id else "null",
            now=datetime.now(UTC).isoformat(),
        )
        async with connections().acquire() as connection:
            try:
                if citus:
                    await connection.execute(f"BEGIN; {bind_tenant}")
                    await connection.execute(f"{check}{store}; COMMIT")
                else:
                    await connection.execute(f"BEGIN; {bind_tenant}; {check}{store}; COMMIT")
            except BaseException as error:
                if connection.is_in_transaction():
                    await connection.execute("ROLLBACK")
                if getattr(error, "sqlstate", None) == ROLES_NOT_CONFIRMED:
                    return Response(UNAUTHORIZED, status_code=401, media_type=MediaType.JSON)
                raise
        return json(Stored(size=size, sha256=sha256), status_code=201)

    handlers = [
        ready,
        health,
        login,
        get_project,
        list_projects,
        create_project,
        update_project,
        delete_project,
    ]
    return Litestar(
        route_handlers=[*handlers, upload] if args.upload_dir else handlers,
        lifespan=[lifespan],
        openapi_config=None,
        logging_config=None,
        debug=False,
    )


def from_command_line() -> Litestar:
    """uvicorn's factory. Its worker processes are spawned with this process's sys.argv
    (multiprocessing passes it on), so each one reads the same flags."""
    return create_app(parse_args())


def main() -> None:
    args = parse_args()
    config = uvicorn.Config(
        # An import string, as `tenantry serve --workers N` gives uvicorn: each process builds
        # its own app. With one worker it runs in this process, as `tenantry dev`.
        "baseline_app:from_command_line",
        factory=True,
        host=HOST,
        port=args.port,
        workers=args.workers,
        access_log=False,
        server_header=False,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the SIGINT it stopped on once it has shut down: that is a clean stop.
    with contextlib.suppress(KeyboardInterrupt):
        if args.workers == 1:
            server.run()
            return
        # uvicorn's own --workers path binds its socket with proto 0; accepted connections
        # inherit it, and asyncio's loop (not uvloop's) sets TCP_NODELAY only on IPPROTO_TCP
        # sockets, so every keep-alive response would wait ~40 ms for the client's delayed
        # ACK (Kludex/uvicorn#3149). A bare server should not: the same socket, declared TCP.
        bound = config.bind_socket()
        tcp = socket.socket(bound.family, bound.type, socket.IPPROTO_TCP, fileno=bound.detach())
        tcp.set_inheritable(True)
        Multiprocess(config, sockets=[tcp]).run()


if __name__ == "__main__":
    main()

"""The bare baseline of bench/projects.py: Litestar and an asyncpg pool, no product code.

It answers the same two project reads as the product with the same SQL, as the same database
role under the same row level security, for one tenant fixed at start-up: no authentication,
no ORM, no dependency injection, no logging. bench/projects.py starts it with

    python bench/baseline_app.py --port PORT --dsn DSN --tenant-id UUID
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Literal
from uuid import UUID

import asyncpg
import msgspec
import uvicorn
from litestar import Litestar, MediaType, Response, get

HOST = "127.0.0.1"
# The product's SQLAlchemy pool keeps up to 20 connections open (TENANTRY_DB_POOL_SIZE).
POOL_MIN_SIZE = 10
POOL_MAX_SIZE = 20
# The row level security policy shows nothing until the transaction names its tenant.
SET_TENANT = "select set_config('app.tenant_id', $1, true)"
COLUMNS = "id, name, description, owner_id, version, created_at, updated_at"
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


ENCODER = msgspec.json.Encoder()


def like_pattern(text: str) -> str:
    """A substring pattern for ILIKE ... ESCAPE '/', with the wildcards in ``text`` escaped."""
    escaped = text.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"


def create_app(dsn: str, tenant_id: UUID) -> Litestar:
    pool: asyncpg.Pool | None = None
    tenant_setting = str(tenant_id)

    def connections() -> asyncpg.Pool:
        assert pool is not None, "the lifespan creates the pool before the first request"
        return pool

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        nonlocal pool
        pool = await asyncpg.create_pool(dsn, min_size=POOL_MIN_SIZE, max_size=POOL_MAX_SIZE)
        try:
            yield
        finally:
            await pool.close()

    def json(body: msgspec.Struct) -> Response[bytes]:
        return Response(ENCODER.encode(body), media_type=MediaType.JSON)

    @get("/ready", sync_to_thread=False)
    def ready() -> dict[str, str]:
        # uvicorn accepts connections only after the lifespan has made the pool.
        return {"status": "ok"}

    @get("/api/v1/projects/{project_id:uuid}")
    async def get_project(project_id: UUID) -> Response[bytes]:
        async with connections().acquire() as connection, connection.transaction():
            await connection.execute(SET_TENANT, tenant_setting)
            row = await connection.fetchrow(GET_PROJECT, tenant_id, project_id)
        if row is None:
            return Response(b'{"detail":"Not found"}', status_code=404, media_type=MediaType.JSON)
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
            await connection.execute(SET_TENANT, tenant_setting)
            if q:
                pattern = like_pattern(q)
                rows = await connection.fetch(PAGE_SEARCH, tenant_id, limit, offset, pattern)
                total = await connection.fetchval(COUNT_SEARCH, tenant_id, pattern)
            else:
                rows = await connection.fetch(PAGE, tenant_id, limit, offset)
                total = await connection.fetchval(COUNT, tenant_id)
        items = [ProjectRead(*row) for row in rows]
        return json(Page(items=items, total=total, limit=limit, offset=offset))

    return Litestar(
        route_handlers=[ready, get_project, list_projects],
        lifespan=[lifespan],
        openapi_config=None,
        logging_config=None,
        debug=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True, help="asyncpg DSN of the product's database")
    parser.add_argument("--tenant-id", type=UUID, required=True, help="the one tenant served")
    args = parser.parse_args()
    # uvicorn re-raises the SIGINT it stopped on once it has shut down: that is a clean stop.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(
            create_app(args.dsn, args.tenant_id),
            host=HOST,
            port=args.port,
            workers=1,  # as `tenantry dev`: one process
            access_log=False,
            server_header=False,
            log_level="warning",
        )


if __name__ == "__main__":
    main()

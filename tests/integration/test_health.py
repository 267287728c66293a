"""Service endpoints, request ids and problem+json, over HTTP (security headers and CORS are in
test_security.py)."""

from __future__ import annotations

import asyncio
import gc
import re
import socket
from collections.abc import AsyncIterator

import asyncpg
import msgspec
import pytest
from litestar import Litestar, get
from litestar.testing import AsyncTestClient

from tenantry import bootstrap
from tenantry.config import Settings
from tenantry.infrastructure.db.rls import APP_ROLE

from ..conftest import Client, LogLines, plain_url

PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "request_id"}


def assert_problem(response: object, status: int) -> dict[str, object]:
    assert response.status_code == status  # type: ignore[attr-defined]
    assert response.headers["content-type"].startswith("application/problem+json")  # type: ignore[attr-defined]
    body: dict[str, object] = response.json()  # type: ignore[attr-defined]
    assert body.keys() >= PROBLEM_FIELDS
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]  # type: ignore[attr-defined]
    return body


async def test_health_is_ok(client: Client) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_reports_every_dependency(client: Client) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "redis", "storage", "secrets"}
    for check in body["checks"].values():
        assert check["status"] == "ok"
        assert check["latency_ms"] >= 0


async def test_info_names_the_service(client: Client) -> None:
    response = await client.get("/api/v1/info")
    assert response.status_code == 200
    assert response.json() == {"name": "Tenantry", "version": "0.1.0", "environment": "test"}


async def test_docs_and_openapi_spec_are_served(client: Client) -> None:
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    # Everything the page loads is the app's own: no CDN in the page or its policy.
    policy = docs.headers["content-security-policy"]
    assert "script-src 'self';" in policy
    assert "http" not in policy
    for asset in re.findall(r'(?:src|href)="([^"]+)"', docs.text):
        assert asset.startswith("/docs/static/"), asset
        loaded = await client.get(asset)
        assert loaded.status_code == 200, asset
        assert loaded.headers["content-security-policy"] == policy
    # Nothing but those files: a path climbing out of them finds nothing.
    for escape in ("/docs/static/..%2F..%2Fdocs.py", "/docs/static/%2e%2e/docs.py"):
        assert (await client.get(escape)).status_code == 404, escape
    spec = await client.get("/docs/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert {"/health", "/ready", "/api/v1/info", "/api/v1/tenants"} <= paths.keys()


async def test_the_spec_says_what_errors_and_bodies_look_like(client: Client) -> None:
    spec = (await client.get("/docs/openapi.json")).json()
    problem = {"$ref": "#/components/schemas/Problem"}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            for status, response in operation["responses"].items():
                # /ready's 503 is its report, in the shape of its 200.
                if int(status) >= 400 and (path, status) != ("/ready", "503"):
                    content = response["content"]
                    assert content == {"application/problem+json": {"schema": problem}}, where
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                name = body["schema"]["$ref"].rsplit("/", 1)[1]
                closed = spec["components"]["schemas"][name].get("additionalProperties")
                assert closed is False, where
    assert "401" in spec["paths"]["/api/v1/projects"]["get"]["responses"]
    assert "404" in spec["paths"]["/api/v1/projects/{project_id}"]["get"]["responses"]


async def test_a_well_formed_request_id_is_echoed_and_logged(
    client: Client, log_lines: LogLines
) -> None:
    response = await client.get("/api/v1/info", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    access = log_lines.of("tenantry.access")
    assert access == [
        {
            "message": "request",
            "logger": "tenantry.access",
            "level": "info",
            "request_id": "abc-123",
            "method": "GET",
            "path": "/api/v1/info",
            "route": "/api/v1/info",
            "status": 200,
            "duration_ms": access[0]["duration_ms"],
            "client": access[0]["client"],
            "timestamp": access[0]["timestamp"],
        }
    ]


@pytest.mark.parametrize("bad_id", ["x" * 500, "abc\x01def", "a b c", "ünïcode"])
async def test_a_malformed_request_id_is_replaced(client: Client, bad_id: str) -> None:
    response = await client.get("/health", headers={"X-Request-ID": bad_id.encode("utf-8")})
    assert response.status_code == 200
    new_id = response.headers["x-request-id"]
    assert new_id != bad_id
    assert 0 < len(new_id) <= 128


async def test_every_response_gets_a_fresh_request_id(client: Client) -> None:
    first = await client.get("/health")
    second = await client.get("/health")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_unknown_path_is_problem_json_404(client: Client) -> None:
    body = assert_problem(await client.get("/api/v1/nope", headers={"X-Request-ID": "r-404"}), 404)
    assert body["request_id"] == "r-404"
    assert body["instance"] == "/api/v1/nope"


async def test_wrong_method_is_problem_json_405(client: Client) -> None:
    assert_problem(await client.delete("/health"), 405)


async def test_an_unexpected_error_is_a_bare_500(app: Litestar, log_lines: LogLines) -> None:
    @get("/boom", sync_to_thread=False, opt={"exclude_from_auth": True})
    def boom() -> None:
        token = "local-secret-value"  # a frame local, like a password in a use case
        raise RuntimeError(f"failed after {len(token)} characters")

    app.register(boom)
    async with AsyncTestClient(app=app) as client:
        response = await client.get("/boom")
    body = assert_problem(response, 500)
    assert "RuntimeError" not in response.text
    assert "Traceback" not in response.text
    assert "failed after" not in response.text
    errors = log_lines.of("tenantry.errors")
    assert "local-secret-value" not in str(errors)
    assert errors
    assert errors[0]["request_id"] == body["request_id"]


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers: a hung dependency."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()


async def test_an_app_stopped_leaves_no_connection_open(
    settings: Settings, database_url: str, clean_state: None
) -> None:
    """Each app of a process closes its database connections when it stops, not only the first
    (advanced-alchemy's lifespan disposes the first one's engine alone), and not when collected:
    a test process makes hundreds of apps, on a server shared with others."""

    async def open_connections() -> int:
        connection = await asyncpg.connect(plain_url(database_url))
        try:
            return int(
                await connection.fetchval(
                    "select count(*) from pg_stat_activity "
                    "where datname = current_database() and usename = $1",
                    APP_ROLE,
                )
            )
        finally:
            await connection.close()

    gc.disable()  # the collector would close what the app left
    try:
        before = await open_connections()
        for _ in range(3):
            async with AsyncTestClient(app=bootstrap.create_app(settings)) as client:
                assert (await client.get("/ready")).status_code == 200
                assert await open_connections() > before
            assert await open_connections() == before
    finally:
        gc.enable()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_ready_is_503_when_the_database_is_down(settings: Settings) -> None:
    dead = msgspec.structs.replace(
        settings, database_url=f"postgresql://nobody@127.0.0.1:{closed_port()}/none"
    )
    async with AsyncTestClient(app=bootstrap.create_app(dead)) as client:
        response = await client.get("/ready")
        assert response.status_code == 503
        checks = response.json()["checks"]
        assert checks["database"]["status"] == "error"
        assert checks["redis"]["status"] == "ok"
        assert (await client.get("/health")).status_code == 200


async def test_ready_gives_up_on_a_hung_dependency(settings: Settings, silent_server: int) -> None:
    hung = msgspec.structs.replace(
        settings,
        database_url=f"postgresql://nobody@127.0.0.1:{silent_server}/none",
        redis_url=f"redis://127.0.0.1:{silent_server}/0",
        ready_check_timeout=0.3,
        db_connect_timeout=1.0,
    )
    async with AsyncTestClient(app=bootstrap.create_app(hung)) as client:
        response = await client.get("/ready")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == {
        "status": "error",
        "latency_ms": checks["database"]["latency_ms"],
        "error": "timeout",
    }
    assert checks["redis"]["error"] == "timeout"

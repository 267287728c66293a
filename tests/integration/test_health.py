"""Service endpoints, request ids, security headers and problem+json, over HTTP."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import msgspec
import pytest
from litestar import Litestar, get
from litestar.testing import AsyncTestClient

from tenantry import bootstrap
from tenantry.config import Settings

from ..conftest import Client, LogLines

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
    assert set(body["checks"]) == {"database", "redis", "storage"}
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
    assert "cdn.jsdelivr.net" in docs.headers["content-security-policy"]
    spec = await client.get("/docs/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert {"/health", "/ready", "/api/v1/info", "/api/v1/tenants"} <= paths.keys()


async def test_security_headers_are_on_every_response(client: Client) -> None:
    for path in ["/health", "/does-not-exist"]:
        response = await client.get(path)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert "default-src 'none'" in response.headers["content-security-policy"]


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


async def test_cors_preflight_allows_configured_origins_only(settings: Settings) -> None:
    app = bootstrap.create_app(
        msgspec.structs.replace(settings, cors_origins=["https://app.example"])
    )
    async with AsyncTestClient(app=app) as client:
        preflight = {"Access-Control-Request-Method": "POST"}
        allowed = await client.options(
            "/api/v1/tenants", headers={"Origin": "https://app.example", **preflight}
        )
        assert allowed.status_code == 204
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        denied = await client.options(
            "/api/v1/tenants", headers={"Origin": "https://evil.example", **preflight}
        )
        assert "access-control-allow-origin" not in denied.headers
        assert denied.headers["x-request-id"]


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

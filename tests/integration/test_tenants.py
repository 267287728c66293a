"""POST /api/v1/tenants against real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import asyncpg
import pytest

from ..conftest import Client, plain_url
from .test_health import assert_problem


async def test_create_tenant(client: Client, database_url: str) -> None:
    response = await client.post("/api/v1/tenants", json={"name": " Acme  Corp ", "slug": "Acme"})
    assert response.status_code == 201
    tenant = response.json()["tenant"]
    assert tenant["name"] == "Acme Corp"
    assert tenant["slug"] == "acme"
    assert tenant["status"] == "active"
    assert uuid.UUID(tenant["id"]).version == 7
    assert datetime.fromisoformat(tenant["created_at"]).utcoffset().total_seconds() == 0

    connection = await asyncpg.connect(plain_url(database_url))
    try:
        row = await connection.fetchrow(
            "select slug, settings from tenants where id = $1", uuid.UUID(tenant["id"])
        )
    finally:
        await connection.close()
    assert row["slug"] == "acme"


async def test_a_taken_slug_is_409(client: Client) -> None:
    assert (
        await client.post("/api/v1/tenants", json={"name": "A", "slug": "acme"})
    ).status_code == 201
    body = assert_problem(
        await client.post("/api/v1/tenants", json={"name": "B", "slug": "ACME"}), 409
    )
    assert body["errors"] == [{"field": "slug", "message": "is taken"}]


async def test_concurrent_creates_of_one_slug_make_one_tenant(client: Client) -> None:
    responses = await asyncio.gather(
        *(client.post("/api/v1/tenants", json={"name": f"T{i}", "slug": "race"}) for i in range(5))
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201, 409, 409, 409, 409]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Acme", "slug": "a"}, "slug"),
        ({"name": "Acme", "slug": "-bad-"}, "slug"),
        ({"name": "Acme", "slug": "admin"}, "slug"),
        ({"name": "", "slug": "acme"}, "name"),
        ({"name": "   ", "slug": "acme"}, "name"),
        ({"name": "x" * 201, "slug": "acme"}, "name"),
        ({"slug": "acme"}, "name"),
        ({"name": 5, "slug": "acme"}, "name"),
        ({"name": "Acme", "slug": "acme", "plan": "gold"}, "plan"),
    ],
)
async def test_invalid_tenant_is_422_naming_the_field(
    client: Client, body: dict[str, object], field: str
) -> None:
    problem = assert_problem(await client.post("/api/v1/tenants", json=body), 422)
    assert field in {error["field"] for error in problem["errors"]}  # type: ignore[union-attr]


@pytest.mark.parametrize("raw", [b"{", b"[]", b"null", b"\xff\xfe", b'{"name": "a", "slug": "abc"'])
async def test_malformed_json_is_4xx(client: Client, raw: bytes) -> None:
    response = await client.post(
        "/api/v1/tenants", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code in {400, 422}
    assert_problem(response, response.status_code)


async def test_an_oversized_body_is_413(client: Client) -> None:
    response = await client.post(
        "/api/v1/tenants",
        content=b'{"name": "' + b"x" * 2_000_000 + b'", "slug": "big"}',
        headers={"Content-Type": "application/json"},
    )
    assert_problem(response, 413)


async def test_nothing_is_written_by_a_rejected_request(client: Client, database_url: str) -> None:
    await client.post("/api/v1/tenants", json={"name": "", "slug": "acme"})
    await client.post("/api/v1/tenants", content=b"{", headers={"Content-Type": "application/json"})
    connection = await asyncpg.connect(plain_url(database_url))
    try:
        assert await connection.fetchval("select count(*) from tenants") == 0
    finally:
        await connection.close()

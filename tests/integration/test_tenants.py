"""POST /api/v1/tenants against real PostgreSQL: the tenant and its owner in one transaction."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from ..conftest import Client, plain_url
from .test_audit import trail
from .test_health import assert_problem

PASSWORD = "correct horse battery 9"


def tenant_body(slug: str = "acme", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Acme",
        "slug": slug,
        "owner": {"username": "olive", "email": "olive@acme.example", "password": PASSWORD},
    }
    body.update(overrides)
    return body


async def count(database_url: str, table: str) -> int:
    connection = await asyncpg.connect(plain_url(database_url))
    try:
        return int(await connection.fetchval(f"select count(*) from {table}"))
    finally:
        await connection.close()


async def test_create_tenant_with_its_owner(client: Client, database_url: str) -> None:
    response = await client.post("/api/v1/tenants", json=tenant_body("Acme", name=" Acme  Corp "))
    assert response.status_code == 201
    tenant, user = response.json()["tenant"], response.json()["user"]
    assert tenant["name"] == "Acme Corp"
    assert tenant["slug"] == "acme"
    assert tenant["status"] == "active"
    assert uuid.UUID(tenant["id"]).version == 7
    assert datetime.fromisoformat(tenant["created_at"]).utcoffset().total_seconds() == 0
    assert user["tenant_id"] == tenant["id"]
    assert user["roles"] == ["owner"]
    assert user["email"] == "olive@acme.example"
    assert "password" not in response.text
    assert "argon2" not in response.text
    assert await count(database_url, "users") == 1


async def test_a_taken_slug_is_409(client: Client) -> None:
    assert (await client.post("/api/v1/tenants", json=tenant_body())).status_code == 201
    body = assert_problem(await client.post("/api/v1/tenants", json=tenant_body("ACME")), 409)
    assert body["errors"] == [{"field": "slug", "message": "is taken"}]


async def test_concurrent_creates_of_one_slug_make_one_tenant(
    client: Client, database_url: str
) -> None:
    responses = await asyncio.gather(
        *(client.post("/api/v1/tenants", json=tenant_body("race")) for _ in range(5))
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201, 409, 409, 409, 409]
    assert await count(database_url, "tenants") == 1


async def test_a_bad_owner_creates_no_tenant(client: Client, database_url: str) -> None:
    body = tenant_body(
        owner={"username": "olive", "email": "olive@acme.example", "password": "short"}
    )
    problem = assert_problem(await client.post("/api/v1/tenants", json=body), 422)
    assert {e["field"] for e in problem["errors"]} == {"password"}  # type: ignore[union-attr]
    assert await count(database_url, "tenants") == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (tenant_body("a"), "slug"),
        (tenant_body("-bad-"), "slug"),
        (tenant_body("admin"), "slug"),
        (tenant_body(name=""), "name"),
        (tenant_body(name="   "), "name"),
        (tenant_body(name="x" * 201), "name"),
        ({"slug": "acme", "owner": tenant_body()["owner"]}, "name"),
        ({"name": "Acme", "slug": "acme"}, "owner"),
        (tenant_body(name=5), "name"),
        (tenant_body(plan="gold"), "plan"),
        (
            tenant_body(owner={"username": "olive", "email": "not-an-email", "password": PASSWORD}),
            "email",
        ),
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
    await client.post("/api/v1/tenants", json=tenant_body(name=""))
    await client.post("/api/v1/tenants", content=b"{", headers={"Content-Type": "application/json"})
    assert await count(database_url, "tenants") == 0


async def test_platform_admin_lists_and_updates_tenants(
    client: Client, superuser: dict[str, str]
) -> None:
    created = await client.post("/api/v1/tenants", json=tenant_body())
    tenant_id = created.json()["tenant"]["id"]
    listing = await client.get("/api/v1/admin/tenants", headers=superuser)
    assert listing.status_code == 200
    assert {t["slug"] for t in listing.json()["items"]} == {"platform", "acme"}
    patched = await client.patch(
        f"/api/v1/admin/tenants/{tenant_id}", headers=superuser, json={"settings": {"plan": "gold"}}
    )
    assert patched.json()["settings"] == {"plan": "gold"}
    assert_problem(
        await client.patch(
            f"/api/v1/admin/tenants/{tenant_id}", headers=superuser, json={"status": "gone"}
        ),
        422,
    )
    missing = "01a20000-0000-7000-8000-000000000000"
    assert_problem(
        await client.patch(f"/api/v1/admin/tenants/{missing}", headers=superuser, json={}), 404
    )


async def test_only_superusers_reach_platform_administration(client: Client) -> None:
    await client.post("/api/v1/tenants", json=tenant_body())
    login = await client.post(
        "/api/v1/auth/login", json={"tenant": "acme", "login": "olive", "password": PASSWORD}
    )
    owner = {"Authorization": f"Bearer {login.json()['access_token']}"}
    assert_problem(await client.get("/api/v1/admin/tenants", headers=owner), 403)
    assert_problem(await client.get("/api/v1/admin/tenants"), 401)


async def test_options_on_platform_administration_is_answered_not_a_500(client: Client) -> None:
    # The automatic OPTIONS answer skips authentication but runs the controller's guards,
    # which once read a user that was never set.
    for path in ("/api/v1/admin/tenants", f"/api/v1/admin/tenants/{uuid.uuid4()}"):
        response = await client.options(path)
        assert response.status_code == 204, path
        assert "OPTIONS" in response.headers["allow"]
    assert (await client.options("/api/v1/admin/keys")).status_code == 204


async def test_a_tenants_creation_and_a_superusers_change_are_on_its_trail(
    client: Client, superuser: dict[str, str]
) -> None:
    created = (await client.post("/api/v1/tenants", json=tenant_body())).json()
    tenant_id, owner_id = created["tenant"]["id"], created["user"]["id"]
    patched = await client.patch(
        f"/api/v1/admin/tenants/{tenant_id}",
        headers=superuser,
        json={"allow_self_signup": True, "settings": {"plan": "gold"}},
    )
    assert patched.status_code == 200, patched.text
    login = await client.post(
        "/api/v1/auth/login", json={"tenant": "acme", "login": "olive", "password": PASSWORD}
    )
    owner = {"Authorization": f"Bearer {login.json()['access_token']}"}

    events = (await trail(client, owner))["items"]
    assert [(e["action"], e["actor_type"], e["target_id"]) for e in events] == [
        ("tenant.updated", "superuser", tenant_id),
        ("user.created", "user", owner_id),
        ("tenant.created", "user", tenant_id),
    ]
    assert {e["actor_id"] for e in events[1:]} == {owner_id}
    assert events[0]["changes"] == {
        "before": {},
        "after": {},
        "changed": ["settings.allow_self_signup", "settings.plan"],
    }
    assert events[2]["changes"] == {"after": {"name": "Acme", "slug": "acme", "status": "active"}}
    assert PASSWORD not in str(events)

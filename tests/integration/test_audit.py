"""The audit trail over HTTP, on real PostgreSQL as the app role."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from tenantry.domain.audit import AUDIT_PAGE_MAX
from tenantry.presentation.errors import PARAMETER_ERRORS

from ..conftest import Client, plain_url
from .identity import add_user, owner_session
from .test_health import assert_problem


async def trail(client: Client, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = await client.get("/api/v1/audit", headers=headers, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_projects_changes_are_on_its_tenants_trail_newest_first(client: Client) -> None:
    owner = await owner_session(client, "acme")
    other = await owner_session(client, "globex")
    me = (await client.get("/api/v1/auth/me", headers=owner)).json()
    created = await client.post(
        "/api/v1/projects",
        headers={**owner, "X-Request-ID": "audit-create-1"},
        json={"name": "Apollo", "description": "moon"},
    )
    assert created.status_code == 201, created.text
    project = created.json()
    path = f"/api/v1/projects/{project['id']}"
    patched = await client.patch(
        path, headers={**owner, "If-Match": '"1"'}, json={"name": "Artemis", "description": "x"}
    )
    assert patched.status_code == 200, patched.text
    # Stale: refused, and so not on the trail.
    stale = await client.patch(path, headers={**owner, "If-Match": '"1"'}, json={"name": "X"})
    assert stale.status_code == 412
    assert (await client.delete(path, headers=owner)).status_code == 204

    events = (await trail(client, owner, target_type="project"))["items"]
    assert [(e["action"], e["target_type"], e["target_id"]) for e in events] == [
        ("project.deleted", "project", project["id"]),
        ("project.updated", "project", project["id"]),
        ("project.created", "project", project["id"]),
    ]
    first = events[-1]
    assert first["actor_type"] == "user"
    assert first["actor_id"] == me["id"]
    assert first["request_id"] == "audit-create-1"
    assert first["client"]
    assert first["changes"] == {"after": {"name": "Apollo"}}
    assert events[1]["changes"] == {
        "before": {"name": "Apollo"},
        "after": {"name": "Artemis"},
        "changed": ["description"],
    }
    assert first["tenant_id"] == me["tenant_id"]
    assert set(first) == {
        "id",
        "tenant_id",
        "actor_type",
        "actor_id",
        "api_key_id",
        "action",
        "target_type",
        "target_id",
        "request_id",
        "client",
        "changes",
        "created_at",
    }
    # Another tenant's trail has none of it; its owner's filter by this id finds nothing.
    assert (await trail(client, other, target=project["id"]))["items"] == []


async def test_members_may_not_read_the_trail(client: Client) -> None:
    owner = await owner_session(client, "acme")
    member = await add_user(client, owner, "mia", ["member"], "acme")
    assert_problem(await client.get("/api/v1/audit", headers=member), 403)
    assert_problem(await client.get("/api/v1/audit"), 401)


async def test_pages_follow_the_cursor_and_filters_narrow(client: Client) -> None:
    owner = await owner_session(client, "acme")
    ids = []
    for name in ("A", "B", "C"):
        response = await client.post("/api/v1/projects", headers=owner, json={"name": name})
        ids.append(response.json()["id"])
    document = await client.post(
        f"/api/v1/projects/{ids[0]}/documents", headers=owner, json={"title": "T", "content": "c"}
    )
    assert document.status_code == 201, document.text

    page1 = await trail(client, owner, limit=2)
    page2 = await trail(client, owner, limit=2, before=page1["next_cursor"])
    assert page1["next_cursor"] == page1["items"][-1]["id"]
    assert [e["action"] for e in page1["items"] + page2["items"]] == [
        "document.created",
        "project.created",
        "project.created",
        "project.created",
    ]
    # Then the tenant's sign-up, and nothing before it.
    signup = await trail(client, owner, limit=2, before=page2["next_cursor"])
    assert [e["action"] for e in signup["items"]] == ["user.created", "tenant.created"]
    last = await trail(client, owner, limit=2, before=signup["next_cursor"])
    assert last == {"items": [], "next_cursor": None}
    only = await trail(client, owner, action="document.created")
    assert [e["target_id"] for e in only["items"]] == [document.json()["id"]]
    assert only["next_cursor"] is None
    by_target = await trail(client, owner, target_type="project", target=ids[1])
    assert [e["target_id"] for e in by_target["items"]] == [ids[1]]
    future = await trail(client, owner, since="2999-01-01T00:00:00Z")
    assert future["items"] == []
    me = (await client.get("/api/v1/auth/me", headers=owner)).json()
    mine = await trail(client, owner, actor=me["id"], action="project.created")
    assert {e["target_id"] for e in mine["items"]} == set(ids)
    assert (await trail(client, owner, actor=str(uuid.uuid4())))["items"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 201},
        {"before": "not-a-uuid"},
        {"since": "yesterday"},
        {"action": "x" * 101},
    ],
)
async def test_bad_parameters_are_refused(client: Client, params: dict[str, Any]) -> None:
    owner = await owner_session(client, "acme")
    response = await client.get("/api/v1/audit", headers=owner, params=params)
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_the_app_role_can_neither_change_nor_remove_an_event(
    client: Client, app_database_url: str
) -> None:
    owner = await owner_session(client, "acme")
    await client.post("/api/v1/projects", headers=owner, json={"name": "Apollo"})
    event = (await trail(client, owner))["items"][0]
    tenant = (await client.get("/api/v1/auth/me", headers=owner)).json()["tenant_id"]
    connection = await asyncpg.connect(plain_url(app_database_url))
    try:
        for sql in (
            "update audit_events set action = 'forged' where id = $1",
            "delete from audit_events where id = $1",
        ):
            async with connection.transaction():
                await connection.execute(f"SET LOCAL app.tenant_id = '{tenant}'")
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await connection.execute(sql, uuid.UUID(event["id"]))
    finally:
        await connection.close()
    assert (await trail(client, owner))["items"][0] == event


async def test_a_superuser_reads_any_tenants_trail_or_every_tenants(
    client: Client, superuser: dict[str, str]
) -> None:
    acme = await owner_session(client, "acme")
    globex = await owner_session(client, "globex")
    ids = {}
    for headers, name in ((acme, "Apollo"), (acme, "Gemini"), (globex, "Mercury")):
        response = await client.post("/api/v1/projects", headers=headers, json={"name": name})
        ids[name] = response.json()["id"]
    tenant = {
        slug: (await client.get("/api/v1/auth/me", headers=headers)).json()["tenant_id"]
        for slug, headers in (("acme", acme), ("globex", globex))
    }

    async def admin_trail(headers: dict[str, str], **params: Any) -> Any:
        return await client.get("/api/v1/admin/audit", headers=headers, params=params)

    page1 = (await admin_trail(superuser, tenant_id=tenant["acme"], limit=1)).json()
    page2 = (
        await admin_trail(superuser, tenant_id=tenant["acme"], limit=1, before=page1["next_cursor"])
    ).json()
    assert [e["target_id"] for e in page1["items"] + page2["items"]] == [
        ids["Gemini"],
        ids["Apollo"],
    ]
    other = await admin_trail(superuser, tenant_id=tenant["globex"], action="project.created")
    assert other.status_code == 200, other.text
    assert [e["target_id"] for e in other.json()["items"]] == [ids["Mercury"]]
    assert other.json()["next_cursor"] is None
    # The same event as its tenant's owner reads it.
    assert other.json()["items"] == (await trail(client, globex, action="project.created"))["items"]

    # Tenant owners reach no other tenant's trail, nor their own, this way.
    for slug in ("acme", "globex"):
        assert_problem(await admin_trail(acme, tenant_id=tenant[slug]), 403)
    assert_problem(await admin_trail({}, tenant_id=tenant["acme"]), 401)
    assert_problem(await admin_trail(superuser, tenant_id=str(uuid.uuid4())), 404)
    malformed = await admin_trail(superuser, tenant_id="not-an-id")
    assert malformed.status_code in PARAMETER_ERRORS
    assert_problem(malformed, malformed.status_code)

    # Without tenant_id: every tenant's events, newest first, each naming its tenant.
    everyone = (await admin_trail(superuser, action="project.created")).json()
    assert [(e["tenant_id"], e["target_id"]) for e in everyone["items"]] == [
        (tenant["globex"], ids["Mercury"]),
        (tenant["acme"], ids["Gemini"]),
        (tenant["acme"], ids["Apollo"]),
    ]
    first = (await admin_trail(superuser, action="project.created", limit=2)).json()
    rest = (
        await admin_trail(superuser, action="project.created", limit=2, before=first["next_cursor"])
    ).json()
    assert first["items"] + rest["items"] == everyone["items"]
    assert rest["next_cursor"] is None
    mercury = (await admin_trail(superuser, target=ids["Mercury"])).json()["items"]
    assert [e["action"] for e in mercury] == ["project.created"]
    assert_problem(await admin_trail(acme), 403)
    too_many = await admin_trail(superuser, limit=AUDIT_PAGE_MAX + 1)
    assert too_many.status_code in PARAMETER_ERRORS


async def test_the_app_role_reads_every_tenants_events_only_through_the_platform_page(
    client: Client, app_database_url: str
) -> None:
    """Its own statements see one tenant's events at most; the page function (0018) gives the
    platform's trail and nothing else: the maintenance role's policy is for reading."""
    acme = await owner_session(client, "acme")
    await owner_session(client, "globex")
    await client.post("/api/v1/projects", headers=acme, json={"name": "Apollo"})
    connection = await asyncpg.connect(plain_url(app_database_url))
    try:
        assert await connection.fetchval("select count(*) from audit_events") == 0
        page = await connection.fetch(
            "select tenant_id, action from tenantry_platform_audit("
            "null, 1000, null, null, null, null, null, null)"
        )
        assert len({row["tenant_id"] for row in page}) == 2
        assert len(page) <= 200
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connection.execute("set role tenantry_maintenance")
    finally:
        await connection.close()

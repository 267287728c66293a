"""/api/v1/users: within the caller's tenant only; members read, owners and admins write."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn

from tenantry import bootstrap
from tenantry.application.users import DeleteUser, UpdateUser
from tenantry.config import Settings
from tenantry.domain.auth import Actor
from tenantry.domain.errors import Conflict
from tenantry.domain.users import Role
from tenantry.infrastructure.embedded import free_port

from ..conftest import Client, plain_url, uvicorn_serving
from .identity import PASSWORD, add_user, owner_session
from .test_audit import trail
from .test_health import assert_problem

LAST_OWNER = "A tenant must keep at least one active owner."
# Each way of taking an active owner away, as a request: (method, body).
REMOVALS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "demote": ("patch", {"roles": ["member"]}),
    "deactivate": ("patch", {"is_active": False}),
    "delete": ("delete", None),
}


async def test_owner_manages_users(client: Client) -> None:
    owner = await owner_session(client, "acme")
    created = await client.post(
        "/api/v1/users",
        headers=owner,
        json={
            "username": "adam",
            "email": "adam@acme.example",
            "password": PASSWORD,
            "roles": ["admin"],
        },
    )
    assert created.status_code == 201
    adam = created.json()
    assert adam["roles"] == ["admin"]

    listing = await client.get("/api/v1/users", headers=owner, params={"limit": 1, "offset": 1})
    assert listing.json()["total"] == 2
    assert listing.json()["limit"] == 1
    assert [u["username"] for u in listing.json()["items"]] == ["adam"]

    fetched = await client.get(f"/api/v1/users/{adam['id']}", headers=owner)
    assert fetched.json()["email"] == "adam@acme.example"

    patched = await client.patch(
        f"/api/v1/users/{adam['id']}",
        headers=owner,
        json={"roles": ["member"], "settings": {"tz": "UTC"}},
    )
    assert patched.status_code == 200
    assert patched.json()["roles"] == ["member"]
    assert patched.json()["settings"] == {"tz": "UTC"}

    assert (await client.delete(f"/api/v1/users/{adam['id']}", headers=owner)).status_code == 204
    assert_problem(await client.get(f"/api/v1/users/{adam['id']}", headers=owner), 404)


async def test_members_read_but_get_403_on_writes(client: Client) -> None:
    owner = await owner_session(client, "acme")
    member = await add_user(client, owner, "mia", ["member"], "acme")
    assert (await client.get("/api/v1/users", headers=member)).status_code == 200
    body = {"username": "max", "email": "max@acme.example", "password": PASSWORD}
    assert_problem(await client.post("/api/v1/users", headers=member, json=body), 403)
    me = (await client.get("/api/v1/auth/me", headers=member)).json()
    owner_id = (await client.get("/api/v1/auth/me", headers=owner)).json()["id"]
    assert_problem(await client.delete(f"/api/v1/users/{owner_id}", headers=member), 403)
    assert_problem(
        await client.patch(f"/api/v1/users/{me['id']}", headers=member, json={"roles": ["owner"]}),
        403,
    )
    own_email = await client.patch(
        f"/api/v1/users/{me['id']}", headers=member, json={"email": "mia2@acme.example"}
    )
    assert own_email.status_code == 200


async def test_an_admin_cannot_reach_another_tenants_users(client: Client) -> None:
    acme = await owner_session(client, "acme")
    admin = await add_user(client, acme, "adam", ["admin"], "acme")
    globex = await owner_session(client, "globex")
    victim = (await client.get("/api/v1/auth/me", headers=globex)).json()["id"]
    for method in ("get", "patch", "delete"):
        kwargs = {"json": {"is_active": False}} if method == "patch" else {}
        response = await getattr(client, method)(f"/api/v1/users/{victim}", headers=admin, **kwargs)
        assert_problem(response, 404)
    listed = (await client.get("/api/v1/users", headers=admin)).json()
    assert victim not in {u["id"] for u in listed["items"]}
    assert (await client.get("/api/v1/auth/me", headers=globex)).status_code == 200


async def test_deactivated_users_lose_access_at_once(client: Client) -> None:
    owner = await owner_session(client, "acme")
    member = await add_user(client, owner, "mia", ["member"], "acme")
    mia = (await client.get("/api/v1/auth/me", headers=member)).json()["id"]
    await client.patch(f"/api/v1/users/{mia}", headers=owner, json={"is_active": False})
    assert_problem(await client.get("/api/v1/auth/me", headers=member), 401)


async def test_bad_user_input_is_4xx(client: Client) -> None:
    owner = await owner_session(client, "acme")
    cases = [
        {"username": "x", "email": "x@acme.example", "password": PASSWORD},
        {"username": "max", "email": "nope", "password": PASSWORD},
        {"username": "max", "email": "max@acme.example", "password": "short"},
        {
            "username": "max",
            "email": "max@acme.example",
            "password": PASSWORD,
            "roles": ["superuser"],
        },
        {"username": "max", "email": "max@acme.example", "password": PASSWORD, "is_admin": True},
    ]
    for body in cases:
        assert_problem(await client.post("/api/v1/users", headers=owner, json=body), 422)
    assert_problem(await client.get("/api/v1/users/not-a-uuid", headers=owner), 404)
    assert_problem(await client.get("/api/v1/users", headers=owner, params={"limit": 1000}), 422)
    assert_problem(await client.get("/api/v1/users", headers=owner, params={"offset": -1}), 422)


async def active_owners(database_url: str, tenant_id: str) -> set[str]:
    """Read as the database owner, past both walls: what is stored, not what the API says."""
    connection = await asyncpg.connect(plain_url(database_url))
    try:
        rows = await connection.fetch(
            "select id from users where tenant_id = $1::uuid and is_active "
            "and 'owner' = any(roles)",
            tenant_id,
        )
    finally:
        await connection.close()
    return {str(row["id"]) for row in rows}


async def remove(
    client: httpx.AsyncClient, kind: str, headers: dict[str, str], user_id: str
) -> Any:
    method, body = REMOVALS[kind]
    kwargs = {"json": body} if body is not None else {}
    return await getattr(client, method)(f"/api/v1/users/{user_id}", headers=headers, **kwargs)


async def test_the_last_active_owner_cannot_be_taken_away(client: Client) -> None:
    owner = await owner_session(client, "acme")
    me = (await client.get("/api/v1/auth/me", headers=owner)).json()["id"]
    for kind in REMOVALS:
        body = assert_problem(await remove(client, kind, owner, me), 409)
        assert body["detail"] == LAST_OWNER
    # Another owner, deactivated, does not count: the last active owner is still refused.
    otto = await add_user(client, owner, "otto", ["owner"], "acme")
    otto_id = (await client.get("/api/v1/auth/me", headers=otto)).json()["id"]
    assert (await remove(client, "deactivate", owner, otto_id)).status_code == 200
    assert_problem(await remove(client, "demote", owner, me), 409)
    assert (await client.get("/api/v1/auth/me", headers=owner)).json()["roles"] == ["owner"]


@pytest.fixture
async def served(settings: Settings, client: Client) -> AsyncIterator[httpx.AsyncClient]:
    """The app behind a real uvicorn, for requests that must really run at once (the test
    client runs one request at a time); ``client`` prepares and ``served`` races."""
    port = free_port()
    app = bootstrap.create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    async with (
        uvicorn_serving(config),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        yield http


async def test_owners_removing_each_other_at_once_leave_an_active_owner(
    client: Client, served: httpx.AsyncClient, database_url: str
) -> None:
    """Over HTTP, each round two owners take each other away at the same moment. Of the two,
    one wins; the other is refused: 409 when it ran into the winner's lock, or 401/403 when its
    own credential check already saw what the winner did."""
    owner = await owner_session(client, "acme")
    tenant = (await client.get("/api/v1/auth/me", headers=owner)).json()["tenant_id"]
    survivor = owner
    for round_number in range(9):
        kind = list(REMOVALS)[round_number % len(REMOVALS)]
        rival = await add_user(client, survivor, f"rival{round_number}", ["owner"], "acme")
        ids = [
            (await client.get("/api/v1/auth/me", headers=headers)).json()["id"]
            for headers in (survivor, rival)
        ]
        answers = await asyncio.gather(
            remove(served, kind, survivor, ids[1]), remove(served, kind, rival, ids[0])
        )
        won = [answer.status_code in (200, 204) for answer in answers]
        assert won.count(True) == 1, (kind, [answer.text for answer in answers])
        loser = answers[won.index(False)]
        assert loser.status_code in (401, 403, 409), loser.text
        if loser.status_code == 409:
            assert assert_problem(loser, 409)["detail"] == LAST_OWNER
        winner = won.index(True)
        assert await active_owners(database_url, tenant) == {ids[winner]}, kind
        survivor = (survivor, rival)[winner]


async def test_owner_removals_in_real_transactions_take_turns(
    client: Client, settings: Settings, database_url: str
) -> None:
    """The use cases on real units of work, each owner acting on what its credential check
    said (an owner): only the rule kept under the lock can refuse the second."""
    survivor_headers = await owner_session(client, "acme")
    me = (await client.get("/api/v1/auth/me", headers=survivor_headers)).json()
    tenant = uuid.UUID(me["tenant_id"])
    survivor = uuid.UUID(me["id"])
    container = bootstrap.Container(settings)

    async def take_away(kind: str, actor: uuid.UUID, target: uuid.UUID) -> None:
        acting = Actor(user_id=actor, tenant_id=tenant, roles=(Role.OWNER,))
        async with container.unit_of_work() as uow:
            if kind == "delete":
                await DeleteUser(uow)(acting, target)
            else:
                body = REMOVALS[kind][1]
                assert body is not None
                await UpdateUser(uow)(acting, target, **body)

    try:
        for round_number in range(9):
            kind = list(REMOVALS)[round_number % len(REMOVALS)]
            rival_headers = await add_user(
                client, survivor_headers, f"rival{round_number}", ["owner"], "acme"
            )
            rival_me = await client.get("/api/v1/auth/me", headers=rival_headers)
            rival = uuid.UUID(rival_me.json()["id"])
            outcomes = await asyncio.gather(
                take_away(kind, survivor, rival),
                take_away(kind, rival, survivor),
                return_exceptions=True,
            )
            assert outcomes.count(None) == 1, (kind, outcomes)
            refused = next(outcome for outcome in outcomes if outcome is not None)
            assert isinstance(refused, Conflict), refused
            assert refused.detail == LAST_OWNER
            winner = outcomes.index(None)
            survivor = (survivor, rival)[winner]
            survivor_headers = (survivor_headers, rival_headers)[winner]
            assert await active_owners(database_url, str(tenant)) == {str(survivor)}, kind
    finally:
        await container.close()
        await container.alchemy.get_engine().dispose()


async def test_each_change_of_a_user_is_on_the_trail_and_a_refused_one_is_not(
    client: Client,
) -> None:
    owner = await owner_session(client, "acme")
    me = (await client.get("/api/v1/auth/me", headers=owner)).json()["id"]
    created = await client.post(
        "/api/v1/users",
        headers=owner,
        json={
            "username": "mia",
            "email": "mia@acme.example",
            "password": PASSWORD,
            "roles": ["member"],
        },
    )
    assert created.status_code == 201, created.text
    mia = created.json()["id"]
    # A taken username and the last owner's demotion: refused, and not on the trail.
    taken = await client.post(
        "/api/v1/users",
        headers=owner,
        json={"username": "MIA", "email": "m2@acme.example", "password": PASSWORD, "roles": []},
    )
    assert taken.status_code in (409, 422)
    assert_problem(await remove(client, "demote", owner, me), 409)
    path = f"/api/v1/users/{mia}"
    patched = await client.patch(path, headers=owner, json={"roles": ["admin"]})
    assert patched.status_code == 200, patched.text
    assert (await client.delete(path, headers=owner)).status_code == 204

    events = (await trail(client, owner, target_type="user"))["items"]
    assert [(e["action"], e["actor_id"], e["target_id"]) for e in events] == [
        ("user.deleted", me, mia),
        ("user.updated", me, mia),
        ("user.created", me, mia),
        # The owner's own creation, at the tenant's sign-up.
        ("user.created", me, me),
    ]
    assert events[1]["changes"] == {
        "before": {"roles": ["member"]},
        "after": {"roles": ["admin"]},
    }
    assert events[2]["changes"]["after"] == {
        "username": "mia",
        "email": "mia@acme.example",
        "roles": ["member"],
        "is_active": True,
    }
    assert PASSWORD not in str(events)
    assert "argon2" not in str(events)

"""/api/v1/users: within the caller's tenant only; members read, owners and admins write."""

from __future__ import annotations

from ..conftest import Client
from .identity import PASSWORD, add_user, owner_session
from .test_health import assert_problem


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

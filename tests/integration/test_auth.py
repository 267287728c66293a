"""Sign-up, sign-in and tokens, over HTTP on real PostgreSQL and Redis (their attacks are in
test_security.py)."""

from __future__ import annotations

from ..conftest import Client
from .identity import PASSWORD, bearer, create_tenant, login
from .test_health import assert_problem


async def test_login_me_refresh_logout(client: Client) -> None:
    created = await create_tenant(client, "acme")
    tokens = await login(client, "acme", "OLIVE@acme.example")
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 900

    me = await client.get("/api/v1/auth/me", headers=bearer(tokens))
    assert me.status_code == 200
    body = me.json()
    assert body["id"] == created["user"]["id"]
    assert body["tenant_id"] == created["tenant"]["id"]
    assert body["roles"] == ["owner"]
    assert body["last_login_at"] is not None
    assert {"password", "password_hash", "hashed_password"}.isdisjoint(body)

    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200
    new = refreshed.json()
    assert new["refresh_token"] != tokens["refresh_token"]
    assert (await client.get("/api/v1/auth/me", headers=bearer(new))).status_code == 200

    logout = await client.post("/api/v1/auth/logout", json={"refresh_token": new["refresh_token"]})
    assert logout.status_code == 204
    again = await client.post("/api/v1/auth/refresh", json={"refresh_token": new["refresh_token"]})
    assert_problem(again, 401)


async def test_a_bad_login_field_is_422_naming_it(client: Client) -> None:
    # The field shares its name with the login use case's dependency, which made Litestar call
    # the client's bad value a server error.
    await create_tenant(client, "acme")
    for login_value in ("x" * 300, 5, None, ["olive"]):
        response = await client.post(
            "/api/v1/auth/login",
            json={"tenant": "acme", "login": login_value, "password": PASSWORD},
        )
        body = assert_problem(response, 422)
        assert [error["field"] for error in body["errors"]] == ["login"]  # type: ignore[union-attr]


async def test_the_same_email_signs_up_in_two_tenants_as_two_accounts(client: Client) -> None:
    one = await create_tenant(client, "acme", email="same@example.com")
    two = await create_tenant(client, "globex", email="same@example.com")
    assert one["user"]["id"] != two["user"]["id"]
    acme = bearer(await login(client, "acme", "same@example.com"))
    globex = bearer(await login(client, "globex", "same@example.com"))
    acme_users = (await client.get("/api/v1/users", headers=acme)).json()
    globex_users = (await client.get("/api/v1/users", headers=globex)).json()
    assert [u["id"] for u in acme_users["items"]] == [one["user"]["id"]]
    assert [u["id"] for u in globex_users["items"]] == [two["user"]["id"]]


async def test_register_needs_self_sign_up(client: Client, superuser: dict[str, str]) -> None:
    created = await create_tenant(client, "acme")
    body = {"tenant": "acme", "username": "mia", "email": "mia@x.example", "password": PASSWORD}
    assert_problem(await client.post("/api/v1/auth/register", json=body), 403)
    assert_problem(await client.post("/api/v1/auth/register", json={**body, "tenant": "none"}), 403)

    opened = await client.patch(
        f"/api/v1/admin/tenants/{created['tenant']['id']}",
        headers=superuser,
        json={"allow_self_signup": True},
    )
    assert opened.status_code == 200
    assert opened.json()["settings"]["allow_self_signup"] is True

    registered = await client.post("/api/v1/auth/register", json=body)
    assert registered.status_code == 201
    assert registered.json()["roles"] == ["member"]
    taken = await client.post("/api/v1/auth/register", json={**body, "username": "other"})
    assert assert_problem(taken, 409)["errors"] == [{"field": "email", "message": "is taken"}]
    taken = await client.post(
        "/api/v1/auth/register", json={**body, "email": "x@x.example", "username": "MIA"}
    )
    assert assert_problem(taken, 409)["errors"] == [{"field": "username", "message": "is taken"}]
    weak = await client.post(
        "/api/v1/auth/register",
        json={**body, "username": "max", "email": "max@x.example", "password": "aaaaaaaaaaaaaaaa"},
    )
    assert assert_problem(weak, 422)["errors"][0]["field"] == "password"  # type: ignore[index]
    bad_email = await client.post(
        "/api/v1/auth/register", json={**body, "username": "max", "email": "max"}
    )
    assert assert_problem(bad_email, 422)["errors"][0]["field"] == "email"  # type: ignore[index]


async def test_a_suspended_tenant_is_locked_out_at_once(
    client: Client, superuser: dict[str, str]
) -> None:
    created = await create_tenant(client, "acme")
    tokens = await login(client, "acme", "olive")
    suspend = await client.patch(
        f"/api/v1/admin/tenants/{created['tenant']['id']}",
        headers=superuser,
        json={"status": "suspended"},
    )
    assert suspend.json()["status"] == "suspended"
    assert_problem(await client.get("/api/v1/auth/me", headers=bearer(tokens)), 401)
    assert_problem(
        await client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}),
        401,
    )
    failed = await client.post(
        "/api/v1/auth/login", json={"tenant": "acme", "login": "olive", "password": PASSWORD}
    )
    assert_problem(failed, 401)

    await client.patch(
        f"/api/v1/admin/tenants/{created['tenant']['id']}",
        headers=superuser,
        json={"status": "active"},
    )
    assert (await login(client, "acme", "olive"))["access_token"]

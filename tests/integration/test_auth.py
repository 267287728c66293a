"""Sign-in, tokens and their attacks, over HTTP on real PostgreSQL and Redis."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path

import jwt
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from tenantry import bootstrap
from tenantry.config import Settings
from tenantry.infrastructure.security.tokens import FileKeyring

from ..conftest import Client, LogLines
from .identity import PASSWORD, bearer, create_tenant, login, owner_session
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


@pytest.mark.parametrize(
    ("tenant", "login_name", "password"),
    [
        ("acme", "olive", "wrong password 99"),
        ("acme", "nobody", PASSWORD),
        ("nowhere", "olive", PASSWORD),
        ("acme", "olive@acme.example", ""),
    ],
)
async def test_every_login_failure_is_one_401(
    client: Client, tenant: str, login_name: str, password: str
) -> None:
    await create_tenant(client, "acme")
    response = await client.post(
        "/api/v1/auth/login", json={"tenant": tenant, "login": login_name, "password": password}
    )
    body = assert_problem(response, 401) if password else assert_problem(response, 422)
    if password:
        assert body["detail"] == "Invalid credentials."


async def test_a_reused_refresh_token_revokes_its_family(client: Client) -> None:
    await create_tenant(client, "acme")
    first = await login(client, "acme", "olive")
    second = (
        await client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    ).json()
    replay = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert_problem(replay, 401)
    stolen = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert_problem(stolen, 401)


@pytest.mark.parametrize(
    "token",
    ["", "x", "0" * 32 + "." + "a" * 43, str(uuid.uuid4().hex) + "." + "b" * 43, "a" * 512],
)
async def test_forged_refresh_tokens_are_401(client: Client, token: str) -> None:
    response = await client.post("/api/v1/auth/refresh", json={"refresh_token": token})
    assert response.status_code in {401, 422}
    assert_problem(response, response.status_code)


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_jwt_attacks_are_401(client: Client, keyring_path: str) -> None:
    await create_tenant(client, "acme")
    good = (await login(client, "acme", "olive"))["access_token"]
    header = jwt.get_unverified_header(good)
    claims = jwt.decode(good, options={"verify_signature": False})
    key = FileKeyring(Path(keyring_path), create=False).keys[header["kid"]].material
    now = int(time.time())

    forgeries = {
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': header['kid']})}.{b64(claims)}.",
        "other algorithm": jwt.encode(
            claims, key + key, algorithm="HS512", headers={"kid": header["kid"]}
        ),
        "bad signature": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        "unknown kid": jwt.encode(claims, key, algorithm="HS256", headers={"kid": "nope"}),
        "kid injection": jwt.encode(
            claims, key, algorithm="HS256", headers={"kid": "../../etc/passwd"}
        ),
        "no kid": jwt.encode(claims, key, algorithm="HS256"),
        "expired": jwt.encode(
            {**claims, "exp": now - 10, "iat": now - 1000},
            key,
            algorithm="HS256",
            headers={"kid": header["kid"]},
        ),
        "wrong issuer": jwt.encode(
            {**claims, "iss": "evil"}, key, algorithm="HS256", headers={"kid": header["kid"]}
        ),
        "no expiry": jwt.encode(
            {k: v for k, v in claims.items() if k != "exp"},
            key,
            algorithm="HS256",
            headers={"kid": header["kid"]},
        ),
        "garbage": "not.a.jwt",
    }
    for name, token in forgeries.items():
        response = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, name
        assert response.headers["www-authenticate"].startswith("Bearer")
    for header_value in ("Basic b2xpdmU6cHc=", "Bearer", "Bearer   ", good):
        response = await client.get("/api/v1/auth/me", headers={"Authorization": header_value})
        assert_problem(response, 401)
    assert_problem(await client.get("/api/v1/auth/me"), 401)


async def test_a_token_of_another_tenant_sees_only_its_own(client: Client) -> None:
    acme = await owner_session(client, "acme")
    globex = await owner_session(client, "globex")
    acme_me = (await client.get("/api/v1/auth/me", headers=acme)).json()
    globex_me = (await client.get("/api/v1/auth/me", headers=globex)).json()
    assert acme_me["tenant_id"] != globex_me["tenant_id"]
    response = await client.get(f"/api/v1/users/{globex_me['id']}", headers=acme)
    assert_problem(response, 404)


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


async def test_key_rotation_keeps_old_tokens_and_signs_new_ones(
    client: Client, keyring_path: str
) -> None:
    await create_tenant(client, "acme")
    before = await login(client, "acme", "olive")
    old_kid = jwt.get_unverified_header(before["access_token"])["kid"]

    # Another process rotates (the CLI does exactly this); this one notices the file change.
    new_kid = FileKeyring(Path(keyring_path), create=False).rotate().kid
    after = await login(client, "acme", "olive")
    assert jwt.get_unverified_header(after["access_token"])["kid"] == new_kid != old_kid
    assert (await client.get("/api/v1/auth/me", headers=bearer(before))).status_code == 200
    assert (await client.get("/api/v1/auth/me", headers=bearer(after))).status_code == 200


async def test_login_is_rate_limited_with_retry_after(
    settings: Settings, clean_state: None
) -> None:
    limited = msgspec.structs.replace(
        settings, login_attempts_per_account=3, login_attempts_per_address=100
    )
    async with AsyncTestClient(app=bootstrap.create_app(limited)) as client:
        await create_tenant(client, "acme")
        wrong = {"tenant": "acme", "login": "olive", "password": "wrong password 99"}
        for _ in range(3):
            assert (await client.post("/api/v1/auth/login", json=wrong)).status_code == 401
        blocked = await client.post("/api/v1/auth/login", json={**wrong, "password": PASSWORD})
        body = assert_problem(blocked, 429)
        assert int(blocked.headers["retry-after"]) > 0
        assert "Try again later" in str(body["detail"])


async def test_per_address_limit_is_not_reset_by_a_good_login(
    settings: Settings, clean_state: None
) -> None:
    limited = msgspec.structs.replace(
        settings, login_attempts_per_address=4, login_attempts_per_account=100
    )
    async with AsyncTestClient(app=bootstrap.create_app(limited)) as client:
        await create_tenant(client, "acme")
        for _ in range(3):
            await client.post(
                "/api/v1/auth/login",
                json={"tenant": "acme", "login": "x", "password": "wrong pass 999"},
            )
        assert (
            await client.post(
                "/api/v1/auth/login",
                json={"tenant": "acme", "login": "olive", "password": PASSWORD},
            )
        ).status_code == 200
        blocked = await client.post(
            "/api/v1/auth/login", json={"tenant": "acme", "login": "olive", "password": PASSWORD}
        )
        assert_problem(blocked, 429)


async def test_no_secret_reaches_a_log_line(
    client: Client, log_lines: LogLines, superuser: dict[str, str]
) -> None:
    created = await create_tenant(client, "acme")
    await client.patch(
        f"/api/v1/admin/tenants/{created['tenant']['id']}",
        headers=superuser,
        json={"allow_self_signup": True},
    )
    register_password = "another Secret 77"
    await client.post(
        "/api/v1/auth/register",
        json={
            "tenant": "acme",
            "username": "mia",
            "email": "mia@x.example",
            "password": register_password,
        },
    )
    tokens = await login(client, "acme", "olive")
    await client.post(
        "/api/v1/auth/login",
        json={"tenant": "acme", "login": "olive", "password": "wrong guess 123"},
    )
    refreshed = (
        await client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    ).json()
    key = (
        await client.post("/api/v1/auth/api-keys", headers=bearer(refreshed), json={"name": "ci"})
    ).json()["key"]
    assert (await client.get("/api/v1/auth/me", headers={"X-API-Key": key})).status_code == 200
    await client.post("/api/v1/auth/logout", json={"refresh_token": refreshed["refresh_token"]})

    text = json.dumps(log_lines.all())
    assert log_lines.of("tenantry.access")
    secrets = [
        PASSWORD,
        register_password,
        "wrong guess 123",
        key,
        tokens["access_token"],
        tokens["refresh_token"],
        refreshed["access_token"],
        refreshed["refresh_token"],
        "$argon2",
    ]
    for secret in secrets:
        assert secret not in text
    authenticated = [
        line for line in log_lines.of("tenantry.access") if line["path"] == "/api/v1/auth/me"
    ]
    assert authenticated[0]["tenant_id"] == created["tenant"]["id"]

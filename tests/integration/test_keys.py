"""Signing-key rotation through the API on the default store (a keyring file)."""

from __future__ import annotations

import jwt
from litestar.testing import AsyncTestClient

from tenantry import bootstrap
from tenantry.config import Settings

from ..conftest import Client
from .identity import bearer, create_tenant, login, owner_session
from .test_health import assert_problem


async def test_rotation_signs_new_tokens_and_keeps_old_ones(
    client: Client, superuser: dict[str, str]
) -> None:
    await create_tenant(client, "acme")
    before = await login(client, "acme", "olive")
    listed = (await client.get("/api/v1/admin/keys", headers=superuser)).json()
    old_kid = jwt.get_unverified_header(before["access_token"])["kid"]
    assert listed["current"] == old_kid

    rotated = await client.post("/api/v1/admin/keys/rotate", headers=superuser)
    assert rotated.status_code == 201
    body = rotated.json()
    assert body["current"] != old_kid
    assert [key["current"] for key in body["keys"]] == [True] + [False] * (len(body["keys"]) - 1)
    assert all(set(key) == {"kid", "created_at", "current"} for key in body["keys"])

    after = await login(client, "acme", "olive")
    assert jwt.get_unverified_header(after["access_token"])["kid"] == body["current"]
    for tokens in (before, after):
        assert (await client.get("/api/v1/auth/me", headers=bearer(tokens))).status_code == 200

    # On the trail of the platform tenant, the superusers': who rotated, and to which key.
    root = (await client.get("/api/v1/auth/me", headers=superuser)).json()
    trail = await client.get(
        "/api/v1/admin/audit",
        headers=superuser,
        params={"tenant_id": root["tenant_id"], "action": "signing_key.rotated"},
    )
    (event,) = trail.json()["items"]
    assert (event["actor_type"], event["actor_id"]) == ("superuser", root["id"])
    assert event["changes"] == {"after": {"kid": body["current"], "keys": len(body["keys"])}}


async def test_only_superusers_see_or_rotate_keys(client: Client) -> None:
    owner = await owner_session(client, "acme")
    for method, path in (("GET", "/api/v1/admin/keys"), ("POST", "/api/v1/admin/keys/rotate")):
        assert_problem(await client.request(method, path, headers=owner), 403)
        assert_problem(await client.request(method, path), 401)


async def test_a_second_process_honours_a_rotation_made_by_the_first(
    settings: Settings, client: Client, superuser: dict[str, str]
) -> None:
    await create_tenant(client, "acme")
    async with AsyncTestClient(app=bootstrap.create_app(settings)) as other:
        # The other process has read (and cached) the keyring before the rotation.
        before = await login(other, "acme", "olive")
        rotated = (await client.post("/api/v1/admin/keys/rotate", headers=superuser)).json()
        after = await login(client, "acme", "olive")
        assert jwt.get_unverified_header(after["access_token"])["kid"] == rotated["current"]
        for tokens in (before, after):
            assert (await other.get("/api/v1/auth/me", headers=bearer(tokens))).status_code == 200

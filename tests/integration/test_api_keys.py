"""API keys over HTTP: shown once, stored hashed, tenant- and user-bound, revocable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from ..conftest import Client, plain_url
from .identity import add_user, owner_session
from .test_audit import trail
from .test_files import upload
from .test_health import assert_problem


async def test_api_key_round_trip(client: Client, database_url: str) -> None:
    owner = await owner_session(client, "acme")
    created = await client.post("/api/v1/auth/api-keys", headers=owner, json={"name": "ci"})
    assert created.status_code == 201
    body = created.json()
    key = body["key"]
    assert key.startswith("tnt_")
    assert key.split("_")[1].endswith(body["prefix"])

    me = await client.get("/api/v1/auth/me", headers={"X-API-Key": key})
    assert me.status_code == 200

    listing = (await client.get("/api/v1/auth/api-keys", headers=owner)).json()
    assert listing["total"] == 1
    assert "key" not in listing["items"][0]
    assert key not in str(listing)
    assert listing["items"][0]["last_used_at"] is not None

    connection = await asyncpg.connect(plain_url(database_url))
    try:
        stored = await connection.fetchval("select key_hash from api_keys")
    finally:
        await connection.close()
    assert key not in stored

    assert (
        await client.delete(f"/api/v1/auth/api-keys/{body['id']}", headers=owner)
    ).status_code == 204
    assert_problem(await client.get("/api/v1/auth/me", headers={"X-API-Key": key}), 401)
    assert_problem(await client.delete(f"/api/v1/auth/api-keys/{body['id']}", headers=owner), 404)


async def test_a_key_uploads_files_small_and_held_ahead(client: Client) -> None:
    """An upload by a key is confirmed again when its row is written, after its bytes (migration
    0032_confirm_api_key): a live key's uploads, one held ahead (over 1 MiB) and one not, are
    stored, and the key's user is their creator."""
    owner = await owner_session(client, "acme")
    made = await client.post("/api/v1/auth/api-keys", headers=owner, json={"name": "uploads"})
    key = {"X-API-Key": made.json()["key"]}
    me = (await client.get("/api/v1/auth/me", headers=owner)).json()
    for size in (5_000, 2 * 1024 * 1024):
        stored = await client.post(
            "/api/v1/files", headers=key, files=upload(b"k" * size, "k.txt", "text/plain")
        )
        assert stored.status_code == 201, stored.text
        assert (stored.json()["size"], stored.json()["created_by"]) == (size, me["id"])


async def test_bad_keys_are_401(client: Client) -> None:
    owner = await owner_session(client, "acme")
    key = (await client.post("/api/v1/auth/api-keys", headers=owner, json={"name": "ci"})).json()[
        "key"
    ]
    for bad in (
        key[:-2] + "zz",
        "tnt_000000000000_" + "a" * 43,
        "garbage",
        key.replace("tnt_", ""),
    ):
        assert_problem(await client.get("/api/v1/auth/me", headers={"X-API-Key": bad}), 401)


async def test_expired_keys_and_bad_expiry(client: Client, database_url: str) -> None:
    owner = await owner_session(client, "acme")
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    assert_problem(
        await client.post(
            "/api/v1/auth/api-keys", headers=owner, json={"name": "old", "expires_at": past}
        ),
        422,
    )
    soon = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    keys: dict[str, dict[str, str]] = {}
    for name in ("lapsed", "live"):
        created = await client.post(
            "/api/v1/auth/api-keys", headers=owner, json={"name": name, "expires_at": soon}
        )
        assert created.status_code == 201
        assert created.json()["expires_at"] is not None
        keys[name] = created.json()
    for key in keys.values():
        assert (await client.get("/api/v1/auth/me", headers={"X-API-Key": key["key"]})).is_success
    # The API refuses to issue a key that is already expired, so one is made to lapse as the
    # database owner would see a day go by.
    connection = await asyncpg.connect(plain_url(database_url))
    try:
        await connection.execute(
            "update api_keys set expires_at = now() - interval '1 second' where id = $1::uuid",
            keys["lapsed"]["id"],
        )
    finally:
        await connection.close()
    lapsed = await client.get("/api/v1/auth/me", headers={"X-API-Key": keys["lapsed"]["key"]})
    assert_problem(lapsed, 401)
    live = await client.get("/api/v1/auth/me", headers={"X-API-Key": keys["live"]["key"]})
    assert live.status_code == 200
    assert live.json()["username"] == "olive"


async def test_keys_belong_to_their_user_and_tenant(client: Client) -> None:
    acme = await owner_session(client, "acme")
    member = await add_user(client, acme, "mia", ["member"], "acme")
    globex = await owner_session(client, "globex")
    key = (await client.post("/api/v1/auth/api-keys", headers=acme, json={"name": "ci"})).json()
    assert_problem(await client.delete(f"/api/v1/auth/api-keys/{key['id']}", headers=member), 404)
    assert_problem(await client.delete(f"/api/v1/auth/api-keys/{key['id']}", headers=globex), 404)
    assert (await client.get("/api/v1/auth/api-keys", headers=member)).json()["total"] == 0
    me = (await client.get("/api/v1/auth/me", headers={"X-API-Key": key["key"]})).json()
    assert me["username"] == "olive"


async def test_api_keys_and_changes_made_with_them_are_on_the_trail(client: Client) -> None:
    owner = await owner_session(client, "acme")
    created = await client.post(
        "/api/v1/auth/api-keys", headers=owner, json={"name": "ci", "expires_at": None}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    with_key = {"X-API-Key": body["key"]}
    # A change made with the key is the key's.
    added = await client.post(
        "/api/v1/users",
        headers=with_key,
        json={
            "username": "mia",
            "email": "mia@acme.example",
            "password": "correct horse battery 9",
            "roles": ["member"],
        },
    )
    assert added.status_code == 201, added.text
    assert (
        await client.delete(f"/api/v1/auth/api-keys/{body['id']}", headers=with_key)
    ).status_code == 204

    events = (await trail(client, owner))["items"]
    assert [(e["action"], e["actor_type"], e["api_key_id"]) for e in events[:3]] == [
        ("api_key.revoked", "api_key", body["id"]),
        ("user.created", "api_key", body["id"]),
        ("api_key.created", "user", None),
    ]
    assert events[2]["target_id"] == body["id"]
    assert events[2]["changes"] == {"after": {"name": "ci", "expires_at": None}}
    assert body["key"] not in str(events)
    assert body["prefix"] not in str(events)

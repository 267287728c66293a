"""Attacks on the API and what they get, in one place: one answer for every wrong credential,
forged and replayed tokens refused, guessing slowed down, hostile bodies and headers refused
early and cheaply, CORS kept to its origins, and no secret in any log line. HTTP through the app
to real PostgreSQL and Redis, and through a real uvicorn server where the in-process client
would not show what a client on the wire gets."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import msgspec
import pytest
import uvicorn
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import event

from tenantry import bootstrap
from tenantry.application.keys import read_keyring
from tenantry.cli.run import _uvicorn_options
from tenantry.config import Settings
from tenantry.infrastructure.embedded import free_port
from tenantry.infrastructure.secrets.environment import EnvironmentSecrets

from ..conftest import Client, LogLines, uvicorn_serving
from .identity import PASSWORD, bearer, create_tenant, login, owner_session
from .test_health import assert_problem

# Sign-in


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


# Refresh tokens


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
    ["", "x", "0" * 32 + "." + "a" * 43, "0d875f3b7f754f5d95baf1e83532b392." + "b" * 43, "a" * 512],
)
async def test_forged_refresh_tokens_are_401(client: Client, token: str) -> None:
    response = await client.post("/api/v1/auth/refresh", json={"refresh_token": token})
    assert response.status_code in {401, 422}
    assert_problem(response, response.status_code)


# Access tokens


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_jwt_attacks_are_401(client: Client, settings: Settings) -> None:
    created = await create_tenant(client, "acme")
    other = await create_tenant(client, "globex")
    good = (await login(client, "acme", "olive"))["access_token"]
    header = jwt.get_unverified_header(good)
    claims = jwt.decode(good, options={"verify_signature": False})
    kid = header["kid"]
    key = (await read_keyring(EnvironmentSecrets(settings))).keys[kid].material
    now = int(time.time())
    attacker = "an attacker's secret, 32 bytes.."
    head, body, signature = good.split(".")

    def mac_under(header: dict[str, Any]) -> str:
        """The claims under any header, with an HMAC-SHA256 made with the real key."""
        encoded = b64(header)
        mac = hmac.new(key, f"{encoded}.{body}".encode(), hashlib.sha256).digest()
        return f"{encoded}.{body}.{b64url(mac)}"

    def signed(payload: dict[str, Any], **headers: Any) -> str:
        return jwt.encode(payload, key, algorithm="HS256", headers={"kid": kid, **headers})

    def forged(payload: dict[str, Any], **headers: Any) -> str:
        return jwt.encode(payload, attacker, algorithm="HS256", headers={"kid": kid, **headers})

    forgeries = {
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{b64(claims)}.",
        "alg None": f"{b64({'alg': 'None', 'kid': kid})}.{b64(claims)}.",
        "alg NONE, real signature": f"{b64({'alg': 'NONE', 'kid': kid})}.{body}.{signature}",
        "other algorithm": jwt.encode(claims, key + key, algorithm="HS512", headers={"kid": kid}),
        # Algorithm confusion: a verifier trusting the header would check "RSA" with its key.
        "RS256 header on an HMAC": mac_under({"alg": "RS256", "typ": "JWT", "kid": kid}),
        "embedded jwk": forged(claims, jwk={"kty": "oct", "k": b64url(attacker.encode())}),
        "jku elsewhere": forged(claims, jku="https://evil.example/jwks.json"),
        "another key, the right kid": forged(claims),
        "bad signature": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        "roles raised, real signature": f"{head}.{b64({**claims, 'roles': ['superuser']})}.{signature}",
        "unknown kid": jwt.encode(claims, key, algorithm="HS256", headers={"kid": "nope"}),
        "well-formed unknown kid": signed(claims, kid="0" * 16),
        "kid injection": signed(claims, kid="../../etc/passwd"),
        "kid SQL": signed(claims, kid="' OR '1'='1"),
        "kid NUL": signed(claims, kid=kid + "\x00"),
        "kid not a string": mac_under({"alg": "HS256", "typ": "JWT", "kid": 7}),
        "kid of 10 KB": signed(claims, kid="a" * 10_000),
        "no kid": jwt.encode(claims, key, algorithm="HS256"),
        "expired": signed({**claims, "exp": now - 10, "iat": now - 1000}),
        "issued in the future": signed({**claims, "iat": now + 3600, "exp": now + 7200}),
        "not valid yet": signed({**claims, "nbf": now + 3600}),
        "wrong issuer": signed({**claims, "iss": "evil"}),
        "no expiry": signed({k: v for k, v in claims.items() if k != "exp"}),
        "another tenant's id": signed({**claims, "tid": other["tenant"]["id"]}),
        "another tenant's user": signed({**claims, "sub": other["user"]["id"]}),
        "garbage": "not.a.jwt",
    }
    for name, token in forgeries.items():
        response = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, name
        assert response.headers["www-authenticate"].startswith("Bearer"), name
        assert response.json()["detail"] == "Invalid or expired credentials.", name
    for header_value in ("Basic b2xpdmU6cHc=", "Bearer", "Bearer   ", good):
        response = await client.get("/api/v1/auth/me", headers={"Authorization": header_value})
        assert_problem(response, 401)
    assert_problem(await client.get("/api/v1/auth/me"), 401)
    # The same claims signed as the service signs them pass: the refusals above are the
    # forgeries' doing, not the harness's.
    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {signed(claims)}"})
    assert me.json()["tenant_id"] == created["tenant"]["id"]


async def test_a_token_of_another_tenant_sees_only_its_own(client: Client) -> None:
    acme = await owner_session(client, "acme")
    globex = await owner_session(client, "globex")
    acme_me = (await client.get("/api/v1/auth/me", headers=acme)).json()
    globex_me = (await client.get("/api/v1/auth/me", headers=globex)).json()
    assert acme_me["tenant_id"] != globex_me["tenant_id"]
    response = await client.get(f"/api/v1/users/{globex_me['id']}", headers=acme)
    assert_problem(response, 404)


# API keys


def api_key_parts(key: str) -> tuple[str, str, str]:
    """The tenant (hex), public prefix and secret of a ``tnt_<tenant><prefix>_<secret>`` key."""
    head, secret = key.removeprefix("tnt_")[:44], key.removeprefix("tnt_")[45:]
    return head[:32], head[32:], secret


@contextlib.contextmanager
def statements_sent(app: Litestar) -> Iterator[list[str]]:
    """Every SQL statement the app sends while inside."""
    engine = app.plugins.get(SQLAlchemyPlugin).config[0].get_engine()
    sent: list[str] = []

    def capture(*args: Any) -> None:
        sent.append(args[2])

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        yield sent
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)


async def test_wrong_api_keys_get_one_answer_by_one_path(app: Litestar, client: Client) -> None:
    owner = await owner_session(client, "acme")
    issued = await client.post("/api/v1/auth/api-keys", headers=owner, json={"name": "ci"})
    key = issued.json()["key"]
    tenant, prefix, secret = api_key_parts(key)
    revoked = (await client.post("/api/v1/auth/api-keys", headers=owner, json={"name": "x"})).json()
    await client.delete(f"/api/v1/auth/api-keys/{revoked['id']}", headers=owner)
    globex = await owner_session(client, "globex")
    _, other_prefix, other_secret = api_key_parts(
        (await client.post("/api/v1/auth/api-keys", headers=globex, json={"name": "ci"})).json()[
            "key"
        ]
    )
    shapeless = ["", "x", "tnt_", key + "A" * 100, key.replace("tnt_", "tnx_"), "tnt_" + "Z" * 200]
    # Well formed: each costs one lookup by prefix and one digest comparison, found or not.
    well_formed = {
        "unknown prefix": f"tnt_{tenant}{'0' * 12}_{secret}",
        "known prefix, wrong secret": f"tnt_{tenant}{prefix}_{'A' * len(secret)}",
        "known prefix, secret one character off": key[:-1] + ("A" if key[-1] != "A" else "B"),
        "another tenant's prefix": f"tnt_{tenant}{other_prefix}_{other_secret}",
        "unknown tenant": f"tnt_{uuid.uuid4().hex}{prefix}_{secret}",
        "revoked": revoked["key"],
    }
    answers = []
    for wrong in shapeless:
        answers.append(await client.get("/api/v1/auth/me", headers={"X-API-Key": wrong}))
    paths = {}
    for name, wrong in well_formed.items():
        with statements_sent(app) as sent:
            answers.append(await client.get("/api/v1/auth/me", headers={"X-API-Key": wrong}))
        paths[name] = sent
    first = assert_problem(answers[0], 401)
    for answer in answers:
        body = assert_problem(answer, 401)
        assert {**body, "request_id": None} == {**first, "request_id": None}
        assert answer.headers["www-authenticate"] == answers[0].headers["www-authenticate"]
    # Wall-clock time is too noisy to assert; the same statements in the same order (and the
    # digest compared either way) is what keeps a miss from looking unlike a near miss.
    assert paths["unknown prefix"], "the lookup was not seen"
    for name, sent in paths.items():
        assert sent == paths["unknown prefix"], name
    assert (await client.get("/api/v1/auth/me", headers={"X-API-Key": key})).status_code == 200


async def test_failed_api_keys_from_one_address_are_slowed_down(
    settings: Settings, clean_state: None
) -> None:
    # The API key limit reuses the per-address login limit and window.
    limited = msgspec.structs.replace(settings, login_attempts_per_address=5)
    async with AsyncTestClient(app=bootstrap.create_app(limited)) as client:
        owner = await owner_session(client, "acme")
        key = (
            await client.post("/api/v1/auth/api-keys", headers=owner, json={"name": "ci"})
        ).json()["key"]
        good = {"X-API-Key": key}
        wrong = {"X-API-Key": key[:-1] + ("A" if key[-1] != "A" else "B")}
        # Only failures count: a busy client with a good key is never slowed.
        for _ in range(12):
            assert (await client.get("/api/v1/auth/me", headers=good)).status_code == 200
        for _ in range(5):
            assert_problem(await client.get("/api/v1/auth/me", headers=wrong), 401)
        blocked = await client.get("/api/v1/auth/me", headers=wrong)
        body = assert_problem(blocked, 429)
        assert int(blocked.headers["retry-after"]) > 0
        assert "Try again later" in str(body["detail"])
        # Refused before any lookup: guessing on cannot tell a right key from a wrong one.
        assert_problem(await client.get("/api/v1/auth/me", headers=good), 429)
        assert (await client.get("/api/v1/auth/me", headers=owner)).status_code == 200


async def test_two_credentials_at_once_are_refused(client: Client) -> None:
    owner = await owner_session(client, "acme")
    key = (await client.post("/api/v1/auth/api-keys", headers=owner, json={"name": "ci"})).json()[
        "key"
    ]
    for api_key in (key, "tnt_not-a-key"):
        response = await client.get("/api/v1/auth/me", headers={**owner, "X-API-Key": api_key})
        body = assert_problem(response, 401)
        assert "not both" in str(body["detail"])
    assert (await client.get("/api/v1/auth/me", headers={"X-API-Key": key})).status_code == 200


# Hostile bodies


async def test_a_body_over_the_limit_is_413(client: Client, settings: Settings) -> None:
    owner = await owner_session(client, "acme")
    over = b'{"name": "' + b"a" * settings.max_request_body_bytes + b'"}'
    json_body = {**owner, "Content-Type": "application/json"}
    assert_problem(await client.post("/api/v1/projects", headers=json_body, content=over), 413)
    assert_problem(await client.post("/api/v1/auth/login", content=over), 413)


@pytest.mark.parametrize(
    "body",
    [b'{"tenant": "acme", "login":', b"{tenant: 1}", b'{"tenant": "a",}', b"\xff\xfe", b"NaN"],
)
async def test_malformed_json_is_400(client: Client, body: bytes) -> None:
    response = await client.post(
        "/api/v1/auth/login", headers={"Content-Type": "application/json"}, content=body
    )
    assert_problem(response, 400)


TOO_DEEP = (400, "The request body is nested too deeply.")
# Each bomb with the refusal that must stop it: the decoder's depth and range limits or the body
# size limit, each answered before the body is walked, not a parse that runs to its end.
BOMBS = {
    "100k nested arrays": ("[" * 100_000 + "]" * 100_000, *TOO_DEEP),
    "1 MB of open brackets": ("[" * 1_000_000, *TOO_DEEP),
    "100k nested objects": ('{"a":' * 100_000 + "1" + "}" * 100_000, *TOO_DEEP),
    "a 500k-digit number": (
        '{"tenant": "acme", "login": "olive", "password": ' + "9" * 500_000 + "}",
        400,
        "Integer value out of range",
    ),
    "a float past infinity": ('{"tenant": 1e999999}', 400, "Number out of range"),
    "100k unknown keys": (
        "{" + ",".join(f'"k{i}":0' for i in range(100_000)) + "}",
        413,
        "Request Entity Too Large",
    ),
}


@pytest.mark.parametrize(("body", "status", "detail"), BOMBS.values(), ids=BOMBS.keys())
async def test_json_bombs_are_refused_by_their_limit(
    client: Client, log_lines: LogLines, body: str, status: int, detail: str
) -> None:
    owner = await owner_session(client, "acme")
    project = (await client.post("/api/v1/projects", headers=owner, json={"name": "A"})).json()
    nested_in_a_field = f'{{"title": "t", "content": "c", "metadata": {{"a": {body}}}}}'
    targets = [
        ("/api/v1/auth/login", {}, body),
        (f"/api/v1/projects/{project['id']}/documents", owner, nested_in_a_field),
    ]
    for path, headers, content in targets:
        response = await client.post(
            path, headers={**headers, "Content-Type": "application/json"}, content=content
        )
        assert response.status_code == status, (path, response.text)
        assert str(assert_problem(response, status)["detail"]).startswith(detail), path
    assert not log_lines.of("tenantry.errors")


# Hostile headers, through a real server


@pytest.fixture
async def served(settings: Settings, clean_state: None) -> AsyncIterator[str]:
    """The app behind uvicorn on a loopback port, configured as `tenantry serve` runs it."""
    on_loopback = msgspec.structs.replace(settings, host="127.0.0.1", port=free_port())
    app = bootstrap.create_app(on_loopback)
    async with uvicorn_serving(uvicorn.Config(app, **_uvicorn_options(on_loopback))):
        yield f"http://127.0.0.1:{on_loopback.port}"


async def test_huge_headers_are_431_and_the_server_stays_up(served: str) -> None:
    # One client per request: the server may close a connection it refused.
    for headers in (
        {"X-Padding": "a" * 100_000},
        {f"X-Padding-{i}": "a" * 100 for i in range(1000)},
        {"Authorization": "Bearer " + "a" * 100_000},
    ):
        async with httpx.AsyncClient(base_url=served) as http:
            assert_problem(await http.get("/health", headers=headers), 431)
    # Past what one read brings, uvicorn itself refuses: an answer or a dropped connection.
    async with httpx.AsyncClient(base_url=served) as http:
        try:
            refused = await http.get("/health", headers={"X-Padding": "a" * 1_000_000})
        except httpx.TransportError:
            pass
        else:
            assert 400 <= refused.status_code < 500
    async with httpx.AsyncClient(base_url=served) as http:
        assert (await http.get("/health")).status_code == 200


async def test_a_chunked_body_over_the_limit_is_413(served: str, settings: Settings) -> None:
    limit = settings.max_request_body_bytes

    async def unannounced() -> AsyncIterator[bytes]:
        for _ in range(limit // 65_536 + 2):
            yield b"a" * 65_536

    # No Content-Length to refuse it by: the limit holds while the body is read. (Through a
    # real server: the in-process client cannot stream a request body.)
    async with httpx.AsyncClient(base_url=served) as http:
        response = await http.post(
            "/api/v1/auth/login",
            headers={"Content-Type": "application/json"},
            content=unannounced(),
        )
    assert_problem(response, 413)


# CORS and security headers


async def test_security_headers_are_on_every_response(client: Client) -> None:
    for path in ["/health", "/does-not-exist"]:
        response = await client.get(path)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert "default-src 'none'" in response.headers["content-security-policy"]


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


async def test_cors_never_allows_credentials_or_lookalike_origins(settings: Settings) -> None:
    app = bootstrap.create_app(
        msgspec.structs.replace(settings, cors_origins=["https://app.example"])
    )
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type",
    }
    async with AsyncTestClient(app=app) as client:
        allowed = await client.options(
            "/api/v1/projects", headers={"Origin": "https://app.example", **preflight}
        )
        assert allowed.status_code == 204
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in allowed.headers
        # A guarded controller's path too: its guards once made the preflight a 500.
        admin = await client.options(
            "/api/v1/admin/tenants", headers={"Origin": "https://app.example", **preflight}
        )
        assert admin.status_code == 204
        assert admin.headers["access-control-allow-origin"] == "https://app.example"
        for origin in (
            "https://evil.example",
            "https://app.example.evil.example",
            "http://app.example",
            "null",
        ):
            denied = await client.options(
                "/api/v1/projects", headers={"Origin": origin, **preflight}
            )
            assert "access-control-allow-origin" not in denied.headers, origin
            assert "access-control-allow-credentials" not in denied.headers, origin
        simple = await client.get("/health", headers={"Origin": "https://app.example"})
        assert simple.headers["access-control-allow-origin"] == "https://app.example"
        assert "access-control-allow-credentials" not in simple.headers
        foreign = await client.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in foreign.headers


async def test_without_configured_origins_there_is_no_cors(client: Client) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    for path in ("/api/v1/projects", "/api/v1/admin/tenants"):
        response = await client.options(path, headers=preflight)
        assert response.status_code == 204
        assert "access-control-allow-origin" not in response.headers


# Logs


async def test_no_secret_reaches_a_log_line(
    client: Client, log_lines: LogLines, superuser: dict[str, str], settings: Settings
) -> None:
    """A full identity round trip, the failures an attacker would try included."""
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
    near_miss = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert_problem(await client.get("/api/v1/auth/me", headers={"X-API-Key": near_miss}), 401)
    both = {**bearer(refreshed), "X-API-Key": key}
    assert_problem(await client.get("/api/v1/auth/me", headers=both), 401)
    member_password = "a member's Secret 55"
    added = await client.post(
        "/api/v1/users",
        headers=bearer(refreshed),
        json={"username": "max", "email": "max@acme.example", "password": member_password},
    )
    assert added.status_code == 201
    cut_short = b'{"tenant": "acme", "login": "olive", "password": "cut short Secret 44'
    assert_problem(await client.post("/api/v1/auth/login", content=cut_short), 400)
    assert_problem(
        await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": refreshed["access_token"]}
        ),
        401,
    )
    keyring = EnvironmentSecrets(settings)
    before = len((await read_keyring(keyring)).keys)
    assert (await client.post("/api/v1/admin/keys/rotate", headers=superuser)).status_code == 201
    await client.post("/api/v1/auth/logout", json={"refresh_token": refreshed["refresh_token"]})
    signing_keys = list((await read_keyring(keyring)).keys.values())
    assert len(signing_keys) == before + 1

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
        near_miss,
        member_password,
        "cut short Secret 44",
        "platform Secret 99",
        superuser["Authorization"].removeprefix("Bearer "),
        *(signing_key.secret for signing_key in signing_keys),
        "$argon2",
    ]
    for secret in secrets:
        assert secret not in text
    authenticated = [
        line for line in log_lines.of("tenantry.access") if line["path"] == "/api/v1/auth/me"
    ]
    assert authenticated[0]["tenant_id"] == created["tenant"]["id"]

"""Sign-up, sign-in and tokens, over HTTP on real PostgreSQL and Redis (their attacks are in
test_security.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from uuid import UUID, uuid4

import asyncpg
import httpx
import jwt
import msgspec
import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from tenantry import bootstrap
from tenantry.application.keys import read_keyring
from tenantry.cli.run import _uvicorn_options
from tenantry.config import Settings, SettingsError, load_settings
from tenantry.domain.auth import Attempt, RefreshTokenRepository
from tenantry.domain.errors import Unauthenticated
from tenantry.domain.users import Role, UserRepository
from tenantry.infrastructure.cache.rate_limit import RedisRateLimiter
from tenantry.infrastructure.cache.redis import create_redis
from tenantry.infrastructure.db.database import connect
from tenantry.infrastructure.db.tenancy import TenantSession, TenantTransaction, run_at_commit
from tenantry.infrastructure.db.uow import SqlUnitOfWork
from tenantry.infrastructure.embedded import free_port
from tenantry.infrastructure.secrets.environment import EnvironmentSecrets

from ..conftest import Client, uvicorn_serving
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


async def test_an_access_token_stops_at_its_sessions_logout(client: Client) -> None:
    await create_tenant(client, "acme")
    other_session = await login(client, "acme", "olive")
    tokens = await login(client, "acme", "olive")
    assert (await client.get("/api/v1/auth/me", headers=bearer(tokens))).status_code == 200
    logout = await client.post(
        "/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]}
    )
    assert logout.status_code == 204
    assert_problem(await client.get("/api/v1/auth/me", headers=bearer(tokens)), 401)
    assert (await client.get("/api/v1/auth/me", headers=bearer(other_session))).status_code == 200


async def test_an_access_token_stops_when_its_family_is_revoked_for_reuse(client: Client) -> None:
    await create_tenant(client, "acme")
    other_session = await login(client, "acme", "olive")
    tokens = await login(client, "acme", "olive")
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200
    assert (await client.get("/api/v1/auth/me", headers=bearer(tokens))).status_code == 200
    reused = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert_problem(reused, 401)
    for stolen_or_not in (tokens, refreshed.json()):
        assert_problem(await client.get("/api/v1/auth/me", headers=bearer(stolen_or_not)), 401)
    assert (await client.get("/api/v1/auth/me", headers=bearer(other_session))).status_code == 200


async def test_an_access_token_from_before_sessions_works_until_it_expires(
    client: Client, settings: Settings
) -> None:
    await create_tenant(client, "acme")
    tokens = await login(client, "acme", "olive")
    kid = jwt.get_unverified_header(tokens["access_token"])["kid"]
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    key = (await read_keyring(EnvironmentSecrets(settings))).keys[kid].material
    sessionless = {name: value for name, value in claims.items() if name != "sid"}
    older = jwt.encode(sessionless, key, algorithm="HS256", headers={"kid": kid})
    logout = await client.post(
        "/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]}
    )
    assert logout.status_code == 204
    # It names no session, so no revocation can reach it: only its expiry ends it.
    assert (
        await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {older}"})
    ).status_code == 200


# The client address, through a real uvicorn configured as `tenantry serve` and `dev` run it


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    on_loopback = msgspec.structs.replace(settings, host="127.0.0.1", port=free_port())
    app = bootstrap.create_app(on_loopback)
    async with (
        uvicorn_serving(uvicorn.Config(app, **_uvicorn_options(on_loopback))),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{on_loopback.port}") as http,
    ):
        yield http


async def failed_logins(http: httpx.AsyncClient, forwarded_for: list[str]) -> list[int]:
    """A failed sign-in per address claimed, each with another login so that only the
    per-address limit can refuse one."""
    statuses = []
    for number, address in enumerate(forwarded_for):
        response = await http.post(
            "/api/v1/auth/login",
            headers={"X-Forwarded-For": address},
            json={"tenant": "acme", "login": f"nobody{number}", "password": PASSWORD},
        )
        statuses.append(response.status_code)
    return statuses


async def test_a_forwarded_address_from_an_untrusted_peer_changes_nothing(
    settings: Settings, clean_state: None
) -> None:
    limited = msgspec.structs.replace(settings, login_attempts_per_address=3)
    assert limited.trusted_proxies == []  # the default: no peer is a proxy, loopback included
    async with serving(limited) as http:
        rotated = await failed_logins(http, ["1.2.3.4", "1.2.3.5", "1.2.3.6", "1.2.3.7"])
    assert rotated == [401, 401, 401, 429]


async def test_a_trusted_proxys_forwarded_address_is_the_one_limited(
    settings: Settings, clean_state: None
) -> None:
    behind_a_proxy = msgspec.structs.replace(
        settings, login_attempts_per_address=3, trusted_proxies=["127.0.0.0/8"]
    )
    async with serving(behind_a_proxy) as http:
        assert await failed_logins(http, ["1.2.3.4"] * 4) == [401, 401, 401, 429]
        assert await failed_logins(http, ["5.6.7.8"]) == [401]


def test_trusted_proxies_are_addresses_or_networks() -> None:
    parsed = load_settings(
        environ={"TENANTRY_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7,::1"}, env_file=None
    )
    assert parsed.trusted_proxies == ["10.0.0.0/8", "192.168.1.7", "::1"]
    with pytest.raises(SettingsError, match="TENANTRY_TRUSTED_PROXIES"):
        load_settings(environ={"TENANTRY_TRUSTED_PROXIES": "10.0.0.0/8,proxy"}, env_file=None)


@pytest.mark.parametrize("alone", [True, False], ids=["alone", "in_a_transaction"])
async def test_a_sign_in_session_is_written_only_for_an_active_user_and_tenant(
    client: Client, app_database_url: str, database_owner: asyncpg.Connection, alone: bool
) -> None:
    """The login's one write checks the user and the tenant again (either may have been
    disabled while argon2 ran): otherwise it neither stores the token nor records the login.
    Alone (a statement that sets its tenant, migration 0023_login_statements) as in a
    transaction (a rehashed password's)."""
    created = await create_tenant(client, "acme")
    tenant, user = UUID(created["tenant"]["id"]), UUID(created["user"]["id"])
    engine = create_async_engine(
        load_settings(environ={}, env_file=None, database_url=app_database_url).async_database_url
    )
    sessions = async_sessionmaker(engine, expire_on_commit=False, class_=TenantSession)

    async def start(token_hash: str) -> bool:
        async with sessions() as session:
            uow = SqlUnitOfWork(session)
            started = await uow.repository(RefreshTokenRepository, tenant).start_session(
                user_id=user,
                family_id=uuid4(),
                token_hash=token_hash,
                expires_at=datetime.now(UTC) + timedelta(days=1),
                signed_in_at=datetime(2030, 1, 2, tzinfo=UTC),
                alone=alone,
            )
            assert (TenantTransaction.KEY in session.info) is not alone
            await uow.commit()
        return started

    async def state() -> tuple[object, list[str]]:
        last = await database_owner.fetchval("select last_login_at from users where id = $1", user)
        hashes = await database_owner.fetch(
            "select token_hash from refresh_tokens where user_id = $1 order by token_hash", user
        )
        return last, [row["token_hash"] for row in hashes]

    try:
        before, _ = await state()
        await database_owner.execute("update users set is_active = false where id = $1", user)
        assert await start("a" * 64) is False
        assert await state() == (before, [])
        await database_owner.execute("update users set is_active = true where id = $1", user)
        await database_owner.execute(
            "update tenants set status = 'suspended' where id = $1", tenant
        )
        assert await start("b" * 64) is False
        assert await state() == (before, [])
        await database_owner.execute("update tenants set status = 'active' where id = $1", tenant)
        assert await start("c" * 64) is True
        assert await state() == (datetime(2030, 1, 2, tzinfo=UTC), ["c" * 64])
    finally:
        await engine.dispose()


async def refused_while_disabled(
    database_owner: asyncpg.Connection,
    tenant: UUID,
    user: UUID,
    session: UUID,
    answers: Callable[[], Awaitable[object]],
) -> None:
    """``answers()`` (the bearer check's forms, side by side) is (None, None) while the user is
    disabled, then while its tenant is suspended, then once its session is revoked (it stays
    so)."""
    await database_owner.execute("update users set is_active = false where id = $1", user)
    assert await answers() == (None, None)
    await database_owner.execute("update users set is_active = true where id = $1", user)
    await database_owner.execute("update tenants set status = 'suspended' where id = $1", tenant)
    assert await answers() == (None, None)
    await database_owner.execute("update tenants set status = 'active' where id = $1", tenant)
    await database_owner.execute(
        "insert into refresh_tokens (tenant_id, id, user_id, family_id, token_hash, "
        "expires_at, revoked_at, created_at, updated_at) "
        "values ($1, $2, $3, $4, $5, now() + interval '1 day', now(), now(), now())",
        tenant,
        uuid4(),
        user,
        session,
        uuid4().hex * 2,
    )
    assert await answers() == (None, None)


async def test_a_streamed_requests_check_answers_as_the_read_at_its_first_transaction(
    client: Client, app_database_url: str, database_owner: asyncpg.Connection
) -> None:
    """A streamed request's bearer check reads nothing when it is made: its unit of work's
    first transaction begins with it, whether that transaction runs a statement first or only
    writes at commit, in that transaction's first round trip, and refuses (Unauthenticated,
    nothing written) the users the read refuses; on a connection that carries no check in
    BEGIN's message (as on Citus) it is the transaction's first statement."""
    created = await create_tenant(client, "acme")
    other = await create_tenant(client, "globex")
    tenant, user = UUID(created["tenant"]["id"]), UUID(created["user"]["id"])
    session = uuid4()
    url = load_settings(environ={}, env_file=None, database_url=app_database_url)
    engine = create_async_engine(
        url.async_database_url,
        pool_size=1,
        max_overflow=0,
        connect_args={"async_creator_fn": connect},
    )
    plain_engine = create_async_engine(url.async_database_url, pool_size=1, max_overflow=0)

    async def checked(
        engine: AsyncEngine, user_id: UUID, claimed: tuple[Role, ...], *, reads_first: bool
    ) -> object:
        """The claimed roles when the first transaction began and committed, else None."""
        async with async_sessionmaker(engine, class_=TenantSession)() as db:
            users = SqlUnitOfWork(db).repository(UserRepository, tenant)
            users.confirm_roles_first(user_id, session_id=session, claimed=claimed)
            assert TenantTransaction.KEY not in db.info
            try:
                if reads_first:
                    await users.get(user)
                run_at_commit(db, tenant, "SELECT 1")
                await db.commit()
            except Unauthenticated as refused:
                detail = refused.detail
            else:
                return claimed
        assert detail == "Invalid or expired credentials."
        return None

    async def answers(user_id: UUID, claimed: tuple[Role, ...]) -> tuple[object, ...]:
        async with async_sessionmaker(engine, class_=TenantSession)() as db:
            read = (
                await SqlUnitOfWork(db)
                .repository(UserRepository, tenant)
                .active_roles(user_id, session_id=session)
            )
        forms = [
            await checked(on, user_id, claimed, reads_first=reads_first)
            for on in (engine, plain_engine)
            for reads_first in (False, True)
        ]
        return (None if set(forms) == {None} else forms[0], read if forms[0] else None)

    owner = (Role.OWNER,)
    try:
        assert await answers(user, owner) == (owner, owner)
        # Roles other than the token's: refused, where a request that is not streamed would
        # go on with the roles read (the client signs in again, or refreshes).
        assert await answers(user, (Role.ADMIN,)) == (None, None)
        assert await answers(UUID(other["user"]["id"]), owner) == (None, None)
        sent: list[str] = []
        async with engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            driver.add_query_logger(lambda query: sent.append(query.query))
        assert await checked(engine, user, owner, reads_first=False) == owner
        # BEGIN, the tenant, the check, the write and COMMIT: one message.
        assert len(sent) == 1
        assert sent[0].startswith("BEGIN; SET LOCAL")
        assert "tenantry_confirm_roles" in sent[0]
        assert sent[0].endswith("COMMIT")
        sent.clear()
        assert await checked(engine, user, owner, reads_first=True) == owner
        assert sent[0].startswith("BEGIN; SET LOCAL")
        assert "tenantry_confirm_roles" in sent[0]
        async with async_sessionmaker(engine, class_=TenantSession)() as db:
            users = SqlUnitOfWork(db).repository(UserRepository, tenant)
            users.confirm_roles_first(user, session_id=session, claimed=owner)
            # A statement alone, on a connection of its own, would pass the check by.
            with pytest.raises(RuntimeError, match="pending"):
                await users.find_by_login("olive", alone=True)
            await users.get(user)
            # Too late once the transaction has begun: nothing would run it.
            with pytest.raises(RuntimeError, match="has begun"):
                users.confirm_roles_first(user, session_id=session, claimed=owner)
        sent.clear()
        async with async_sessionmaker(engine, class_=TenantSession)() as db:
            users = SqlUnitOfWork(db).repository(UserRepository, tenant)
            users.confirm_roles_first(user, session_id=session, claimed=owner)
            run_at_commit(db, tenant, "SELECT 1 / 0")
            with pytest.raises(asyncpg.DivisionByZeroError):
                await db.commit()
            # A transaction that did not commit leaves the check to the next one.
            await users.get(user)
        checks = [message for message in sent if "tenantry_confirm_roles" in message]
        assert len(checks) == 2
        assert checks[1].startswith("BEGIN; SET LOCAL")
        await refused_while_disabled(
            database_owner, tenant, user, session, partial(answers, user, owner)
        )
    finally:
        await engine.dispose()
        await plain_engine.dispose()


async def test_the_bearer_checks_confirmation_answers_as_its_read(
    client: Client, app_database_url: str, database_owner: asyncpg.Connection
) -> None:
    """A token's roles confirmed in BEGIN's round trip (migration 0024_confirm_roles) come back
    where the read would answer the same roles, in that one round trip, the transaction going
    on under the tenant; any other answer is the read's, in a transaction begun again."""
    created = await create_tenant(client, "acme")
    other = await create_tenant(client, "globex")
    tenant, user = UUID(created["tenant"]["id"]), UUID(created["user"]["id"])
    session = uuid4()
    url = load_settings(environ={}, env_file=None, database_url=app_database_url)
    # Connections made as the app makes them (they learn their server takes the check).
    engine = create_async_engine(
        url.async_database_url,
        pool_size=1,
        max_overflow=0,
        connect_args={"async_creator_fn": connect},
    )
    sessions = async_sessionmaker(engine, expire_on_commit=False, class_=TenantSession)
    plain_engine = create_async_engine(url.async_database_url, pool_size=1, max_overflow=0)
    plain = async_sessionmaker(plain_engine, expire_on_commit=False, class_=TenantSession)
    sent: list[str] = []

    async def confirmed(user_id: UUID, claimed: tuple[Role, ...]) -> tuple[object, object]:
        """The answer given the claimed roles, and the read's."""
        async with sessions() as db:
            users = SqlUnitOfWork(db).repository(UserRepository, tenant)
            answer = await users.active_roles(user_id, session_id=session, claimed=claimed)
            # The transaction goes on under its tenant, refused or not.
            assert TenantTransaction.KEY in db.info
            assert (await users.get(user_id) is not None) is (user_id == user)
            await db.commit()
        async with sessions() as db:
            users = SqlUnitOfWork(db).repository(UserRepository, tenant)
            return answer, await users.active_roles(user_id, session_id=session)

    owner, admin = (Role.OWNER,), (Role.ADMIN,)
    try:
        assert await confirmed(user, owner) == (owner, owner)
        # A demotion (or promotion) since the token was issued: the roles the user has now.
        assert await confirmed(user, admin) == (owner, owner)
        assert await confirmed(user, (Role.OWNER, Role.ADMIN)) == (owner, owner)
        assert await confirmed(user, ()) == (owner, owner)
        await database_owner.execute("update users set roles = '{owner,admin}' where id = $1", user)
        both = await confirmed(user, (Role.ADMIN, Role.OWNER))
        assert both[0] == (Role.ADMIN, Role.OWNER)
        assert set(both[1] or ()) == set(both[0])
        await database_owner.execute("update users set roles = '{owner}' where id = $1", user)
        # Another tenant's user, named under this tenant: nothing.
        assert await confirmed(UUID(other["user"]["id"]), owner) == (None, None)
        async with engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            driver.add_query_logger(lambda query: sent.append(query.query))
        sent.clear()
        async with sessions() as db:
            users = SqlUnitOfWork(db).repository(UserRepository, tenant)
            assert await users.active_roles(user, session_id=session, claimed=owner) == owner
        # BEGIN, the tenant and the confirmation in one message; then the ROLLBACK.
        assert len(sent) == 2
        assert sent[0].startswith("BEGIN; SET LOCAL")
        assert "tenantry_confirm_roles" in sent[0]
        # A connection that does not say it takes a check in BEGIN's message (as on Citus)
        # reads the roles instead.
        async with plain() as db:
            users = SqlUnitOfWork(db).repository(UserRepository, tenant)
            assert await users.active_roles(user, session_id=session, claimed=admin) == owner
            assert await users.active_roles(user, session_id=session, claimed=owner) == owner
        await refused_while_disabled(
            database_owner, tenant, user, session, partial(confirmed, user, owner)
        )
    finally:
        await engine.dispose()
        await plain_engine.dispose()


async def test_the_limiter_counts_every_limit_of_an_attempt_in_one_call(
    settings: Settings, clean_state: None
) -> None:
    """Each key counts once per call, its window starts at its first attempt, and the wait
    is the longest among the limits exceeded."""
    redis = create_redis(settings)
    limiter = RedisRateLimiter(redis, prefix=f"test-rl-{uuid4().hex}:")
    short, long = Attempt("short", 1, 60), Attempt("long", 2, 600)
    try:
        assert await limiter.hit(short, long) is None
        wait = await limiter.hit(short, long)  # short is over its limit, long is not yet
        assert 0 < (wait or 0) <= 60
        wait = await limiter.hit(short, long)  # both over: the longer wait
        assert 60 < (wait or 0) <= 600
        assert await limiter.retry_after("long", limit=2) == wait
        assert await limiter.hit(Attempt("other", 1, 60)) is None
        # The script survives the server forgetting it (a restart, SCRIPT FLUSH).
        await redis.script_flush()
        assert await limiter.hit(Attempt("other", 1, 60)) == await redis.ttl(
            f"{limiter.prefix}other"
        )
    finally:
        await redis.aclose()

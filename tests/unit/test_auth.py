from __future__ import annotations

import asyncio
import os
import sys
import threading
from datetime import timedelta

import pytest

from tenantry.application.api_keys import CreateApiKey, ListApiKeys, RevokeApiKey
from tenantry.application.auth import (
    SELF_SIGNUP_SETTING,
    Authenticate,
    AuthPolicy,
    GetMe,
    Login,
    Logout,
    Refresh,
    Register,
)
from tenantry.application.tenants import CreateTenant, OwnerInput
from tenantry.application.users import UpdateUser
from tenantry.domain.auth import Actor, refresh_token_tenant
from tenantry.domain.errors import Conflict, Forbidden, NotFound, RateLimited, Unauthenticated
from tenantry.domain.tenants import TenantStatus
from tenantry.domain.users import Role, UserRepository
from tenantry.infrastructure.security.passwords import HASH_NICENESS, Argon2PasswordHasher

from .fakes import FakePasswordHasher, World

PASSWORD = "correct horse 9 staple"


async def sign_up(world: World, slug: str = "acme", email: str = "olive@acme.example") -> Actor:
    tenant, owner = await CreateTenant(world.identity)(
        name=slug,
        slug=slug,
        owner=OwnerInput(username="olive", email=email, password=PASSWORD),
        client=None,
    )
    return Actor(user_id=owner.id, tenant_id=tenant.id, roles=owner.roles)


async def login(world: World, login: str = "olive", password: str = PASSWORD, tenant: str = "acme"):  # type: ignore[no-untyped-def]
    return await Login(world.identity)(
        tenant=tenant, login=login, password=password, client="10.0.0.1"
    )


async def test_login_by_username_or_email_any_case() -> None:
    world = World()
    owner = await sign_up(world)
    for name in ("olive", "OLIVE", "Olive@Acme.Example"):
        pair = await login(world, name)
        claims = await world.tokens.verify(pair.access_token)
        assert (claims.user_id, claims.tenant_id) == (owner.user_id, owner.tenant_id)
        assert refresh_token_tenant(pair.refresh_token) == owner.tenant_id
    user = world.uow.committed.users[owner.user_id]
    assert user.last_login_at == world.clock.now()


@pytest.mark.parametrize(
    ("tenant", "name", "password"),
    [
        ("acme", "olive", "wrong password 9!"),
        ("acme", "nobody", PASSWORD),
        ("nowhere", "olive", PASSWORD),
    ],
)
async def test_every_login_failure_is_the_same_and_always_verifies(
    tenant: str, name: str, password: str
) -> None:
    world = World()
    await sign_up(world)
    with pytest.raises(Unauthenticated) as error:
        await login(world, name, password, tenant)
    assert error.value.detail == "Invalid credentials."
    # The password is checked (against a decoy when there is no user): no timing oracle.
    assert len(world.passwords.verifications) == 1


async def test_a_suspended_tenant_cannot_sign_in_and_its_tokens_stop() -> None:
    world = World()
    owner = await sign_up(world)
    pair = await login(world)
    actor = await Authenticate(world.identity).bearer(pair.access_token)
    assert actor.user_id == owner.user_id
    async with world.uow as uow:
        await uow.tenants.update(owner.tenant_id, status=TenantStatus.SUSPENDED)
        await uow.commit()
    with pytest.raises(Unauthenticated):
        await login(world)
    with pytest.raises(Unauthenticated):
        await Authenticate(world.identity).bearer(pair.access_token)
    with pytest.raises(Unauthenticated):
        await Refresh(world.identity)(pair.refresh_token)


async def test_a_deactivated_user_cannot_sign_in() -> None:
    world = World()
    owner = await sign_up(world)
    async with world.uow as uow:
        await uow.repository(UserRepository, owner.tenant_id).update(owner.user_id, is_active=False)
        await uow.commit()
    with pytest.raises(Unauthenticated):
        await login(world)


async def test_login_rehashes_when_parameters_change() -> None:
    world = World()
    owner = await sign_up(world)
    world.passwords = FakePasswordHasher(version="v2")
    await login(world)
    assert world.uow.committed.password_hashes[owner.user_id] == f"v2:{PASSWORD}"


async def test_login_limits_per_account_and_per_address() -> None:
    world = World(policy=AuthPolicy(login_attempts_per_account=3, login_attempts_per_address=5))
    await sign_up(world)
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await login(world, password="wrong password 9!")
    with pytest.raises(RateLimited):
        await login(world)  # the right password does not help once the account is locked out
    # Another account from the same address still counts against the address.
    with pytest.raises(Unauthenticated):
        await login(world, "someone-else")
    with pytest.raises(RateLimited) as error:
        await login(world, "yet-another")
    assert error.value.retry_after > 0


async def test_refresh_rotates_and_a_reused_token_revokes_the_family() -> None:
    world = World()
    await sign_up(world)
    first = await login(world)
    second = await Refresh(world.identity)(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    third = await Refresh(world.identity)(second.refresh_token)
    with pytest.raises(Unauthenticated):
        await Refresh(world.identity)(first.refresh_token)  # replayed: theft assumed
    with pytest.raises(Unauthenticated):
        await Refresh(world.identity)(third.refresh_token)  # the whole family is gone


async def test_refresh_refuses_forged_and_expired_tokens() -> None:
    world = World()
    owner = await sign_up(world)
    pair = await login(world)
    for forged in ("", "garbage", f"{owner.tenant_id.hex}.{'x' * 43}", pair.refresh_token + "x"):
        with pytest.raises(Unauthenticated):
            await Refresh(world.identity)(forged)
    world.clock.advance(days=31)
    with pytest.raises(Unauthenticated):
        await Refresh(world.identity)(pair.refresh_token)


async def test_logout_revokes_the_family_and_ignores_garbage() -> None:
    world = World()
    await sign_up(world)
    pair = await login(world)
    await Logout(world.identity)(pair.refresh_token)
    await Logout(world.identity)("garbage")
    with pytest.raises(Unauthenticated):
        await Refresh(world.identity)(pair.refresh_token)


async def test_an_access_token_ends_with_its_session() -> None:
    world = World()
    owner = await sign_up(world)
    authenticate = Authenticate(world.identity)
    other_session = await login(world)
    logged_out = await login(world)
    stolen = await login(world)
    refreshed = await Refresh(world.identity)(stolen.refresh_token)
    # Refreshing keeps the session: the new access token names the same family.
    assert (await world.tokens.verify(refreshed.access_token)).session_id == (
        await world.tokens.verify(stolen.access_token)
    ).session_id
    await Logout(world.identity)(logged_out.refresh_token)
    with pytest.raises(Unauthenticated):
        await Refresh(world.identity)(stolen.refresh_token)  # reused: the family is revoked
    for ended in (logged_out, stolen, refreshed):
        with pytest.raises(Unauthenticated):
            await authenticate.bearer(ended.access_token)
    assert (await authenticate.bearer(other_session.access_token)).user_id == owner.user_id
    # API keys belong to no session and are not touched by any.
    issued = await CreateApiKey(world.uow, world.clock)(owner, name="k", expires_at=None)
    assert (await authenticate.api_key(issued.key, client="10.0.0.1")).user_id == owner.user_id


async def test_roles_come_from_the_database_not_the_token() -> None:
    world = World()
    owner = await sign_up(world)
    admin_user = await UpdateUser(world.uow)(owner, owner.user_id, settings={"theme": "dark"})
    assert admin_user.settings == {"theme": "dark"}
    pair = await login(world)
    async with world.uow as uow:
        await uow.repository(UserRepository, owner.tenant_id).update(
            owner.user_id, roles=(Role.MEMBER,)
        )
        await uow.commit()
    actor = await Authenticate(world.identity).bearer(pair.access_token)
    assert actor.roles == (Role.MEMBER,)


async def test_a_streamed_requests_token_is_confirmed_by_its_first_unit_of_work() -> None:
    """Nothing is read for a streamed request's token: the use case's first unit of work
    refuses an ended session or roles changed since, and goes on otherwise."""
    world = World()
    owner = await sign_up(world)
    authenticate = Authenticate(world.identity)
    live, ended = await login(world), await login(world)
    await Logout(world.identity)(ended.refresh_token)
    actor = await authenticate.bearer(ended.access_token, streamed=True)
    assert actor.user_id == owner.user_id
    with pytest.raises(Unauthenticated):
        async with world.uow:
            pass
    # Confirmed once: the request's later units of work are not checked again.
    async with world.uow:
        pass
    assert (await authenticate.bearer(live.access_token, streamed=True)).roles == (Role.OWNER,)
    async with world.uow as uow:
        await uow.repository(UserRepository, owner.tenant_id).update(
            owner.user_id, roles=(Role.MEMBER,)
        )
        await uow.commit()
    await authenticate.bearer(live.access_token, streamed=True)
    with pytest.raises(Unauthenticated):
        async with world.uow:
            pass


async def test_register_only_where_self_sign_up_is_allowed() -> None:
    world = World()
    owner = await sign_up(world)
    register = Register(world.identity)
    with pytest.raises(Forbidden):
        await register(
            tenant="acme", username="mia", email="mia@x.example", password=PASSWORD, client="c"
        )
    with pytest.raises(Forbidden):
        await register(
            tenant="nowhere", username="mia", email="mia@x.example", password=PASSWORD, client="c"
        )
    async with world.uow as uow:
        await uow.tenants.update(owner.tenant_id, settings={SELF_SIGNUP_SETTING: True})
        await uow.commit()
    user = await register(
        tenant="acme", username="mia", email="mia@x.example", password=PASSWORD, client="c"
    )
    assert user.roles == (Role.MEMBER,)
    assert (
        await GetMe(world.uow)(Actor(user_id=user.id, tenant_id=owner.tenant_id, roles=user.roles))
    ).id == user.id


async def test_the_same_email_in_two_tenants_is_two_accounts() -> None:
    world = World()
    acme = await sign_up(world, "acme", "same@example.com")
    globex = await sign_up(world, "globex", "same@example.com")
    assert acme.user_id != globex.user_id
    pair = await login(world, "same@example.com", tenant="globex")
    assert (await world.tokens.verify(pair.access_token)).tenant_id == globex.tenant_id


async def test_api_key_round_trip() -> None:
    world = World()
    owner = await sign_up(world)
    issued = await CreateApiKey(world.uow, world.clock)(owner, name=" ci  bot ", expires_at=None)
    assert issued.key.startswith("tnt_")
    assert issued.api_key.name == "ci bot"
    assert issued.key not in str(world.uow.committed.api_keys)
    actor = await Authenticate(world.identity).api_key(issued.key, client="10.0.0.1")
    assert (actor.user_id, actor.api_key_id) == (owner.user_id, issued.api_key.id)
    assert world.uow.committed.api_keys[issued.api_key.id].last_used_at == world.clock.now()
    assert [k.id for k in await ListApiKeys(world.uow)(owner)] == [issued.api_key.id]

    await RevokeApiKey(world.uow, world.clock)(owner, issued.api_key.id)
    with pytest.raises(Unauthenticated):
        await Authenticate(world.identity).api_key(issued.key, client="10.0.0.1")
    with pytest.raises(NotFound):
        await RevokeApiKey(world.uow, world.clock)(owner, issued.api_key.id)


async def test_a_streamed_api_key_request_has_its_key_confirmed_again_at_its_write() -> None:
    """An upload's body comes after its key was read: its row, written after the bytes, must
    not stand on that read. The key is kept to be confirmed again, and the confirmation fails
    once the key is revoked; a request whose body came first keeps nothing."""
    world = World()
    owner = await sign_up(world)
    issued = await CreateApiKey(world.uow, world.clock)(owner, name="k", expires_at=None)
    authenticate = Authenticate(world.identity)
    await authenticate.api_key(issued.key, client="10.0.0.1")
    assert await world.uow.later_check_holds() is None
    await authenticate.api_key(issued.key, client="10.0.0.1", streamed=True)
    assert await world.uow.later_check_holds() is True
    await RevokeApiKey(world.uow, world.clock)(owner, issued.api_key.id)
    assert await world.uow.later_check_holds() is False


async def test_api_key_failures_are_limited_per_address_and_only_failures_count() -> None:
    world = World(policy=AuthPolicy(login_attempts_per_address=2))
    owner = await sign_up(world)
    issued = await CreateApiKey(world.uow, world.clock)(owner, name="k", expires_at=None)
    authenticate = Authenticate(world.identity)
    for _ in range(5):
        await authenticate.api_key(issued.key, client="10.0.0.1")
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await authenticate.api_key("tnt_guess", client="10.0.0.1")
    with pytest.raises(RateLimited):
        await authenticate.api_key("tnt_guess", client="10.0.0.1")
    # Refused before the lookup, a good key included; another address is not held up.
    with pytest.raises(RateLimited):
        await authenticate.api_key(issued.key, client="10.0.0.1")
    actor = await authenticate.api_key(issued.key, client="10.0.0.2")
    assert actor.user_id == owner.user_id


async def test_api_keys_refuse_tampering_expiry_and_other_users() -> None:
    world = World()
    owner = await sign_up(world)
    other = await sign_up(world, "globex")
    soon = world.clock.now().replace(year=2026, month=1, day=2)
    issued = await CreateApiKey(world.uow, world.clock)(owner, name="k", expires_at=soon)
    tampered = issued.key[:-1] + ("A" if issued.key[-1] != "A" else "B")
    for bad in (tampered, "tnt_", "not-a-key", issued.key.replace("tnt_", "xyz_")):
        with pytest.raises(Unauthenticated):
            await Authenticate(world.identity).api_key(bad, client="10.0.0.1")
    with pytest.raises(NotFound):
        await RevokeApiKey(world.uow, world.clock)(other, issued.api_key.id)
    world.clock.advance(days=2)
    with pytest.raises(Unauthenticated):
        await Authenticate(world.identity).api_key(issued.key, client="10.0.0.1")


async def test_a_user_deactivated_while_the_password_is_checked_gets_no_tokens() -> None:
    """No transaction stays open across the hash, so the write after it checks again."""
    world = World()
    owner = await sign_up(world)

    class DeactivatedMeanwhile(FakePasswordHasher):
        async def verify(self, password_hash: str | None, password: str) -> bool:
            async with world.uow as uow:
                users = uow.repository(UserRepository, owner.tenant_id)
                await users.update(owner.user_id, is_active=False)
                await uow.commit()
            return await super().verify(password_hash, password)

    world.passwords = DeactivatedMeanwhile()
    tokens_before = dict(world.uow.committed.refresh_tokens)
    with pytest.raises(Unauthenticated):
        await login(world)
    assert world.uow.committed.refresh_tokens == tokens_before
    assert world.uow.committed.users[owner.user_id].last_login_at is None


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread priorities are Linux's")
async def test_hash_threads_yield_the_cpu_to_the_event_loop() -> None:
    hasher = Argon2PasswordHasher(
        time_cost=1, memory_cost_kib=1024, parallelism=1, max_concurrency=2
    )
    loop_thread = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, loop_thread)
    try:
        assert await hasher.verify(await hasher.hash(PASSWORD), PASSWORD)
        niceness = await asyncio.get_running_loop().run_in_executor(
            hasher.pool, lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        )
    finally:
        hasher.close()
    assert niceness == max(before, HASH_NICENESS)
    assert os.getpriority(os.PRIO_PROCESS, loop_thread) == before  # the loop's own is untouched


async def test_self_sign_up_is_recorded_as_the_new_users_own_doing() -> None:
    world = World()
    owner = await sign_up(world)
    async with world.uow as uow:
        await uow.tenants.update(owner.tenant_id, settings={SELF_SIGNUP_SETTING: True})
        await uow.commit()
    before = len(world.events(owner.tenant_id))
    register = Register(world.identity)
    user = await register(
        tenant="acme", username="mia", email="mia@x.example", password=PASSWORD, client="c"
    )
    with pytest.raises(Conflict):
        await register(
            tenant="acme", username="MIA", email="m2@x.example", password=PASSWORD, client="c"
        )
    # Signing in, refreshing and signing out change no data: no events.
    pair = await login(world, "mia")
    pair = await Refresh(world.identity)(pair.refresh_token)
    await Logout(world.identity)(pair.refresh_token)

    [event] = world.events(owner.tenant_id)[before:]
    assert (event.action, event.actor_type, event.actor_id, event.target_id) == (
        "user.created",
        "user",
        user.id,
        user.id,
    )
    assert event.changes["after"]["username"] == "mia"
    assert PASSWORD not in repr(event)


async def test_an_api_key_is_recorded_created_and_revoked_never_its_secret() -> None:
    world = World()
    owner = await sign_up(world)
    before = len(world.events(owner.tenant_id))
    expires = world.clock.now() + timedelta(days=30)
    issued = await CreateApiKey(world.uow, world.clock)(owner, name="ci", expires_at=expires)
    key_actor = await Authenticate(world.identity).api_key(issued.key, client="10.0.0.1")
    await RevokeApiKey(world.uow, world.clock)(key_actor, issued.api_key.id)
    with pytest.raises(NotFound):
        await RevokeApiKey(world.uow, world.clock)(owner, issued.api_key.id)

    events = world.events(owner.tenant_id)[before:]
    assert [(e.action, e.actor_type, e.api_key_id, e.target_id) for e in events] == [
        ("api_key.created", "user", None, issued.api_key.id),
        ("api_key.revoked", "api_key", issued.api_key.id, issued.api_key.id),
    ]
    assert events[0].changes == {"after": {"name": "ci", "expires_at": expires.isoformat()}}
    text = repr(events)
    assert issued.key not in text
    assert issued.api_key.key_hash not in text

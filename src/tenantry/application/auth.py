"""Sign-up, sign-in, tokens and the authentication of every request."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID, uuid4

import msgspec

from tenantry.application.audit import record, snapshot
from tenantry.domain.api_keys import ApiKeyRepository
from tenantry.domain.auth import (
    AccessClaims,
    AccessTokens,
    Actor,
    Attempt,
    PasswordHasher,
    RateLimiter,
    RefreshTokenRepository,
    TokenPair,
    digest,
    new_refresh_token,
    parse_api_key,
    refresh_token_tenant,
    same_digest,
)
from tenantry.domain.errors import INVALID_CREDENTIALS, Forbidden, RateLimited, Unauthenticated
from tenantry.domain.ports import Clock, UnitOfWork
from tenantry.domain.tenants import Tenant, TenantStatus
from tenantry.domain.users import NewUser, Role, User, UserRepository, validate_new_user

INVALID_LOGIN = "Invalid credentials."
TOO_MANY_ATTEMPTS = "Too many attempts. Try again later."
# Compared against when no key has the presented prefix, so a miss costs what a wrong secret
# costs; no key digests to the digest of nothing.
NO_API_KEY_DIGEST = digest("")
SELF_SIGNUP_SETTING = "allow_self_signup"
# What the audit trail shows of a user: who they are and what they may do. A password (or its
# hash) is never a field of User, so it cannot reach the trail.
USER_SHOWN = ("username", "email", "roles", "is_active")


class AuthPolicy(msgspec.Struct, kw_only=True, frozen=True):
    refresh_ttl: timedelta = timedelta(days=30)
    login_attempts_per_account: int = 10
    login_attempts_per_address: int = 50
    login_window_seconds: int = 300
    register_attempts_per_address: int = 10
    register_window_seconds: int = 3600
    # An API key's last_used_at is written at most this often, not on every request.
    api_key_touch_interval: timedelta = timedelta(minutes=1)


class Identity:
    """The collaborators every identity use case needs, gathered once."""

    def __init__(
        self,
        uow: UnitOfWork,
        *,
        passwords: PasswordHasher,
        tokens: AccessTokens,
        limiter: RateLimiter,
        clock: Clock,
        policy: AuthPolicy,
    ) -> None:
        self.uow = uow
        self.passwords = passwords
        self.tokens = tokens
        self.limiter = limiter
        self.clock = clock
        self.policy = policy

    async def limit(self, key: str, *, limit: int, window_seconds: int) -> None:
        await self.limit_all(Attempt(key, limit, window_seconds))

    async def limit_all(self, *attempts: Attempt) -> None:
        """Count the attempt against every limit at once (one round trip); refuse it when
        over any."""
        retry_after = await self.limiter.hit(*attempts)
        if retry_after is not None:
            raise RateLimited(TOO_MANY_ATTEMPTS, retry_after=retry_after)

    async def refuse_if_limited(self, key: str, *, limit: int) -> None:
        """Raise when ``key`` is already over ``limit``, counting nothing."""
        retry_after = await self.limiter.retry_after(key, limit=limit)
        if retry_after is not None:
            raise RateLimited(TOO_MANY_ATTEMPTS, retry_after=retry_after)

    async def new_user(
        self, tenant_id: UUID, *, username: str, email: str, password: str, roles: tuple[Role, ...]
    ) -> NewUser:
        username, email = validate_new_user(username, email, password)
        return NewUser(
            tenant_id=tenant_id,
            username=username,
            email=email,
            password_hash=await self.passwords.hash(password),
            roles=roles,
        )

    async def issue_pair(
        self, user_id: UUID, tenant_id: UUID, roles: tuple[Role, ...], family_id: UUID
    ) -> TokenPair:
        """An access token and the next refresh token of the family ``family_id``; the access
        token names the family, its session, so that revoking one stops the other."""
        refresh = new_refresh_token(tenant_id)
        await self.uow.repository(RefreshTokenRepository, tenant_id).add(
            user_id=user_id,
            family_id=family_id,
            token_hash=digest(refresh),
            expires_at=self.clock.now() + self.policy.refresh_ttl,
        )
        return await self.pair(user_id, tenant_id, roles, family_id, refresh)

    async def pair(
        self, user_id: UUID, tenant_id: UUID, roles: tuple[Role, ...], family_id: UUID, refresh: str
    ) -> TokenPair:
        return TokenPair(
            access_token=await self.tokens.issue(
                user_id=user_id, tenant_id=tenant_id, roles=roles, session_id=family_id
            ),
            refresh_token=refresh,
            expires_in=self.tokens.ttl_seconds,
        )


async def active_tenant(uow: UnitOfWork, slug: str, *, alone: bool = False) -> Tenant | None:
    tenant = await uow.tenants.get_by_slug(slug.strip().lower(), alone=alone)
    return tenant if tenant is not None and tenant.status == TenantStatus.ACTIVE else None


class Register:
    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    async def __call__(
        self, *, tenant: str, username: str, email: str, password: str, client: str
    ) -> User:
        policy = self.identity.policy
        await self.identity.limit(
            f"register:address:{client}",
            limit=policy.register_attempts_per_address,
            window_seconds=policy.register_window_seconds,
        )
        uow = self.identity.uow
        async with uow:
            found = await active_tenant(uow, tenant)
            if found is None or not found.settings.get(SELF_SIGNUP_SETTING, False):
                # The same answer whether the tenant is missing or closed: no slug enumeration.
                raise Forbidden("This tenant does not allow self sign-up.")
            new = await self.identity.new_user(
                found.id, username=username, email=email, password=password, roles=(Role.MEMBER,)
            )
            user = await uow.repository(UserRepository, found.id).add(new)
            # The new user is the actor: a person asked for this account, signed in as no one
            # yet; "system" would read as a worker's doing, and the user's id lets the tenant's
            # owners find everything that person did, starting here.
            self_signed_up = Actor(user_id=user.id, tenant_id=found.id, roles=user.roles)
            await record(
                uow,
                self_signed_up,
                "user.created",
                ("user", user.id),
                changes={"after": snapshot(user, USER_SHOWN)},
            )
            await uow.commit()
        return user


class Login:
    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    async def __call__(self, *, tenant: str, login: str, password: str, client: str) -> TokenPair:
        identity, policy = self.identity, self.identity.policy
        login_key = login.strip().lower()
        # Every attempt counts against both limits and a success resets neither: an attacker
        # sharing an address with a real user gains nothing from the user's good logins.
        await identity.limit_all(
            Attempt(
                f"login:address:{client}",
                policy.login_attempts_per_address,
                policy.login_window_seconds,
            ),
            Attempt(
                f"login:account:{tenant.strip().lower()}:{digest(login_key)}",
                policy.login_attempts_per_account,
                policy.login_window_seconds,
            ),
        )
        uow = identity.uow
        # Each read a statement alone, one round trip: no transaction is open, and no pooled
        # connection waits, while argon2 runs.
        found = await active_tenant(uow, tenant, alone=True)
        match = (
            await uow.repository(UserRepository, found.id).find_by_login(login_key, alone=True)
            if found
            else None
        )
        user, password_hash = match if match else (None, None)
        # Verify even when there is no user, against a dummy hash: same time either way.
        valid = await identity.passwords.verify(password_hash, password)
        if found is None or user is None or password_hash is None or not valid:
            raise Unauthenticated(INVALID_LOGIN)
        if not user.is_active:
            raise Unauthenticated(INVALID_LOGIN)
        rehashed = (
            await identity.passwords.hash(password)
            if identity.passwords.needs_rehash(password_hash)
            else None
        )
        refresh, family_id = new_refresh_token(found.id), uuid4()
        now = identity.clock.now()
        tokens = uow.repository(RefreshTokenRepository, found.id)

        async def start_session(*, alone: bool) -> bool:
            # The user and the tenant are checked again as the session is written: one disabled
            # during the hash gets no tokens.
            return await tokens.start_session(
                user_id=user.id,
                family_id=family_id,
                token_hash=digest(refresh),
                expires_at=now + policy.refresh_ttl,
                signed_in_at=now,
                alone=alone,
            )

        if rehashed is None:
            started = await start_session(alone=True)
        else:
            async with uow:
                await uow.repository(UserRepository, found.id).set_password_hash(user.id, rehashed)
                started = await start_session(alone=False)
                if started:
                    await uow.commit()
        if not started:
            raise Unauthenticated(INVALID_LOGIN)
        return await identity.pair(user.id, found.id, user.roles, family_id, refresh)


class Refresh:
    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    async def __call__(self, refresh_token: str) -> TokenPair:
        tenant_id = refresh_token_tenant(refresh_token)
        if tenant_id is None:
            raise Unauthenticated(INVALID_CREDENTIALS)
        identity, uow = self.identity, self.identity.uow
        now = identity.clock.now()
        async with uow:
            tokens = uow.repository(RefreshTokenRepository, tenant_id)
            stored = await tokens.get_by_hash(digest(refresh_token))
            if stored is None or stored.revoked_at is not None or stored.expires_at <= now:
                raise Unauthenticated(INVALID_CREDENTIALS)
            # The user before the token: a delete of the user takes them in that order (the
            # user, then their tokens by the key's cascade), so the two wait for each other
            # rather than deadlock.
            users = uow.repository(UserRepository, tenant_id)
            roles = await users.active_roles(stored.user_id, held=True)
            if stored.used_at is not None or not await tokens.mark_used(stored.id, now):
                # A used token came back: whoever holds this family may have stolen it.
                await tokens.revoke_family(stored.family_id, now)
                await uow.commit()
                raise Unauthenticated(INVALID_CREDENTIALS)
            if roles is None:
                await tokens.revoke_family(stored.family_id, now)
                await uow.commit()
                raise Unauthenticated(INVALID_CREDENTIALS)
            pair = await identity.issue_pair(stored.user_id, tenant_id, roles, stored.family_id)
            await uow.commit()
        return pair


class Logout:
    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    async def __call__(self, refresh_token: str) -> None:
        """Revoke the token's family. Unknown tokens are ignored: logging out twice is fine."""
        tenant_id = refresh_token_tenant(refresh_token)
        if tenant_id is None:
            return
        uow = self.identity.uow
        async with uow:
            tokens = uow.repository(RefreshTokenRepository, tenant_id)
            stored = await tokens.get_by_hash(digest(refresh_token))
            if stored is not None:
                await tokens.revoke_family(stored.family_id, self.identity.clock.now())
                await uow.commit()


class Authenticate:
    """Turn a presented credential into an Actor, checking the user and tenant are active."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    async def bearer(self, token: str, *, streamed: bool = False) -> Actor:
        """``streamed``: the caller receives the request's body only after this, while its use
        case runs, and no pooled connection may wait on a client's bytes: nothing is read
        here, and the use case's first transaction confirms the token's roles, user, tenant
        and session before any statement of its own, or refuses with Unauthenticated (401).
        Otherwise the use case that follows goes on with the read's transaction, so a request
        that only reads runs one, not two."""
        claims: AccessClaims = await self.identity.tokens.verify(token)
        users = self.identity.uow.repository(UserRepository, claims.tenant_id)
        if streamed:
            users.confirm_roles_first(
                claims.user_id, session_id=claims.session_id, claimed=claims.roles
            )
            return Actor(user_id=claims.user_id, tenant_id=claims.tenant_id, roles=claims.roles)
        # The same read refuses a token whose session was revoked (logout, refresh-token reuse).
        # The token's roles are confirmed in BEGIN's round trip, not read.
        roles = await users.active_roles(
            claims.user_id, session_id=claims.session_id, claimed=claims.roles
        )
        if roles is None:
            raise Unauthenticated(INVALID_CREDENTIALS)
        # Roles come from the database, not the token: a demotion takes effect at once.
        return Actor(user_id=claims.user_id, tenant_id=claims.tenant_id, roles=roles)

    async def api_key(self, key: str, *, client: str, streamed: bool = False) -> Actor:
        """The key's Actor. Failed attempts count against the client's address (failures only:
        a busy client with a good key is never slowed), and an address over the limit is
        refused before any lookup, so guessing keys is slowed as guessing passwords is.
        ``streamed``: the request's body comes after this, while its use case runs: a write
        made after it (an upload's row) confirms the key again."""
        identity, policy = self.identity, self.identity.policy
        failures = f"api_key:address:{client}"
        await identity.refuse_if_limited(failures, limit=policy.login_attempts_per_address)
        try:
            return await self._api_key(key, streamed=streamed)
        except Unauthenticated:
            await identity.limit(
                failures,
                limit=policy.login_attempts_per_address,
                window_seconds=policy.login_window_seconds,
            )
            raise

    async def _api_key(self, key: str, *, streamed: bool) -> Actor:
        parsed = parse_api_key(key)
        if parsed is None:
            raise Unauthenticated(INVALID_CREDENTIALS)
        tenant_id, prefix = parsed
        identity, uow = self.identity, self.identity.uow
        now = identity.clock.now()
        async with uow:
            stored = await uow.repository(ApiKeyRepository, tenant_id).get_by_prefix(prefix)
            matches = same_digest(key, stored.key_hash if stored else NO_API_KEY_DIGEST)
            if (
                stored is None
                or not matches
                or stored.revoked_at is not None
                or (stored.expires_at is not None and stored.expires_at <= now)
            ):
                raise Unauthenticated(INVALID_CREDENTIALS)
            roles = await uow.repository(UserRepository, stored.tenant_id).active_roles(
                stored.user_id
            )
            if roles is None:
                raise Unauthenticated(INVALID_CREDENTIALS)
            keys = uow.repository(ApiKeyRepository, stored.tenant_id)
            last = stored.last_used_at
            if last is None or now - last >= identity.policy.api_key_touch_interval:
                await keys.touch(stored.id, now)
                await uow.commit()
            if streamed:
                keys.confirm_again_at_write(stored.id, user_id=stored.user_id, roles=roles)
        return Actor(
            user_id=stored.user_id, tenant_id=stored.tenant_id, roles=roles, api_key_id=stored.id
        )


class GetMe:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, actor: Actor) -> User:
        async with self.uow:
            user = await self.uow.repository(UserRepository, actor.tenant_id).get(actor.user_id)
        if user is None:
            raise Unauthenticated(INVALID_CREDENTIALS)
        return user

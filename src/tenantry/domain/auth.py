"""Who is calling, and the credentials that say so."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Protocol
from uuid import UUID

import msgspec

from tenantry.domain.users import MANAGERS, Role

API_KEY_TYPE_PREFIX = "tnt_"


class Actor(msgspec.Struct, kw_only=True, frozen=True):
    """The authenticated caller of a use case."""

    user_id: UUID
    tenant_id: UUID
    roles: tuple[Role, ...]
    api_key_id: UUID | None = None

    @property
    def is_superuser(self) -> bool:
        return Role.SUPERUSER in self.roles

    @property
    def can_manage(self) -> bool:
        return self.is_superuser or any(role in MANAGERS for role in self.roles)


class AccessClaims(msgspec.Struct, kw_only=True, frozen=True):
    """What an access token asserts once its signature and expiry are checked."""

    user_id: UUID
    tenant_id: UUID
    roles: tuple[Role, ...]
    token_id: str
    expires_at: datetime
    # The refresh-token family the token was issued in (its sign-in session): revoking the
    # family, at logout or on reuse, stops the token too. None for tokens from before the claim.
    session_id: UUID | None = None


class TokenPair(msgspec.Struct, kw_only=True, frozen=True):
    access_token: str
    refresh_token: str
    expires_in: int


class RefreshToken(msgspec.Struct, kw_only=True, frozen=True):
    id: UUID
    tenant_id: UUID
    user_id: UUID
    family_id: UUID
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None


class ApiKey(msgspec.Struct, kw_only=True, frozen=True):
    id: UUID
    tenant_id: UUID
    user_id: UUID
    name: str
    prefix: str
    key_hash: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class IssuedApiKey(msgspec.Struct, kw_only=True, frozen=True):
    """An API key at creation: the only time its secret is known."""

    api_key: ApiKey
    key: str


def new_secret() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """How a high-entropy secret is stored: its SHA-256, never the secret itself."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_refresh_token(tenant_id: UUID) -> str:
    # The tenant rides in front of the secret so the lookup can run under that tenant's
    # row level security; a forged prefix only selects a tenant where the hash matches nothing.
    return f"{tenant_id.hex}.{new_secret()}"


def refresh_token_tenant(token: str) -> UUID | None:
    tenant_hex, sep, secret = token.partition(".")
    if not sep or len(tenant_hex) != 32 or not (32 <= len(secret) <= 64):
        return None
    try:
        return UUID(hex=tenant_hex)
    except ValueError:
        return None


def new_api_key(tenant_id: UUID) -> tuple[str, str]:
    """A fresh API key and its public lookup prefix: ``tnt_<tenant><prefix>_<secret>``.

    Like refresh tokens, the key names its tenant, so the lookup runs under that tenant's row
    level security and no code path has to search every tenant's keys.
    """
    prefix = secrets.token_hex(6)
    return f"{API_KEY_TYPE_PREFIX}{tenant_id.hex}{prefix}_{new_secret()}", prefix


def parse_api_key(key: str) -> tuple[UUID, str] | None:
    """The tenant and public prefix a well-formed key names, else None."""
    if not key.startswith(API_KEY_TYPE_PREFIX):
        return None
    head, sep, secret = key.removeprefix(API_KEY_TYPE_PREFIX).partition("_")
    if not sep or len(head) != 44 or not (32 <= len(secret) <= 64):
        return None
    try:
        return UUID(hex=head[:32]), head[32:]
    except ValueError:
        return None


def same_digest(secret: str, stored: str) -> bool:
    return hmac.compare_digest(digest(secret), stored)


class Attempt(msgspec.Struct, frozen=True):
    """One limit an attempt counts against: at most ``limit`` per ``window_seconds`` under
    ``key``."""

    key: str
    limit: int
    window_seconds: int


class RefreshTokenRepository(Protocol):
    async def add(
        self, *, user_id: UUID, family_id: UUID, token_hash: str, expires_at: datetime
    ) -> RefreshToken: ...

    async def start_session(
        self,
        *,
        user_id: UUID,
        family_id: UUID,
        token_hash: str,
        expires_at: datetime,
        signed_in_at: datetime,
        alone: bool = False,
    ) -> bool:
        """A sign-in's session: its first refresh token stored and the user's last login set to
        ``signed_in_at``, while the user and the tenant are active; else nothing, and False.
        ``alone``: in a transaction of its own, one statement, committed before this returns,
        whatever the unit of work does (it begins none)."""
        ...

    async def get_by_hash(self, token_hash: str) -> RefreshToken | None: ...

    async def mark_used(self, token_id: UUID, at: datetime) -> bool:
        """Mark an unused token used; False when it was used already (a replay or a race)."""
        ...

    async def revoke_family(self, family_id: UUID, at: datetime) -> None: ...


class PasswordHasher(Protocol):
    async def hash(self, password: str) -> str: ...

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Check a password; with no hash (unknown user) spend the same time and say False."""
        ...

    def needs_rehash(self, password_hash: str) -> bool: ...


class AccessTokens(Protocol):
    """Signing and checking may re-read the keyring from the secret store, hence async."""

    async def issue(
        self, *, user_id: UUID, tenant_id: UUID, roles: tuple[Role, ...], session_id: UUID
    ) -> str:
        """A token of the session ``session_id`` (its refresh-token family)."""
        ...

    async def verify(self, token: str) -> AccessClaims:
        """The claims of a valid token; raise ``Unauthenticated`` for anything else."""
        ...

    @property
    def ttl_seconds(self) -> int: ...


class RateLimiter(Protocol):
    async def hit(self, *attempts: Attempt) -> int | None:
        """Count one attempt against each limit; the seconds to wait when over any, else None."""
        ...

    async def retry_after(self, key: str, *, limit: int) -> int | None:
        """The seconds to wait when ``key`` is already over ``limit``, else None; counts
        nothing (for limits on failures only, checked before the attempt)."""
        ...

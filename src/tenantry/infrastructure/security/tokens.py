"""Access tokens: HS256 JWTs signed with the current key of a keyring.

The keyring holds one current signing key and earlier keys still accepted for verification,
so a rotation logs nobody out. It is a secret of the secret store (Vault, or a local file);
every process notices a rotation on the next unknown ``kid`` or when its cached copy expires.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import jwt
import msgspec

from tenantry.domain.auth import AccessClaims
from tenantry.domain.errors import INVALID_CREDENTIALS, Unauthenticated
from tenantry.domain.keys import Keyring, SigningKey
from tenantry.domain.secrets import KEYRING, SecretStore
from tenantry.domain.users import Role

ALGORITHM = "HS256"
ISSUER = "tenantry"
REQUIRED_CLAIMS = ["exp", "iat", "sub", "tid", "jti", "iss"]
# Kids are 16 hex digits; anything else is refused before the keyring is consulted.
KID = re.compile(r"[0-9a-f]{16}")


class SigningKeys:
    """The keyring as this process sees it, read through the cached secret store.

    A token with an unknown ``kid`` (signed by another process after a rotation) forces one
    fresh read of the store, at most once per ``refresh_interval``: a flood of forged kids
    costs the store one read a second, not one per request.
    """

    def __init__(
        self,
        secrets: SecretStore,
        *,
        refresh_interval: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.secrets = secrets
        self.refresh_interval = refresh_interval
        self._monotonic = monotonic
        self._keyring: Keyring | None = None
        self._forced_at = -math.inf
        self._lock = asyncio.Lock()

    async def load(self, *, fresh: bool = False) -> Keyring:
        secret = await self.secrets.read(KEYRING, fresh=fresh)
        if self._keyring is None or self._keyring.version != secret.version:
            self._keyring = Keyring.from_secret(secret.data, secret.version)
        return self._keyring

    async def signing_key(self) -> SigningKey:
        return (await self.load()).current

    async def holds(self, kid: str) -> bool:
        """Whether the keyring (as cached) still trusts ``kid``; never forces a re-read."""
        return kid in (await self.load()).keys

    async def get(self, kid: str) -> SigningKey | None:
        key = (await self.load()).keys.get(kid)
        if key is not None or not self._may_force():
            return key
        async with self._lock:
            # Whoever waited on the lock finds the read already done.
            if self._may_force():
                self._forced_at = self._monotonic()
                await self.load(fresh=True)
        return (await self.load()).keys.get(kid)

    def _may_force(self) -> bool:
        return self._monotonic() - self._forced_at >= self.refresh_interval


class _Verified(msgspec.Struct, frozen=True):
    claims: AccessClaims
    kid: str
    expires: float  # the exp claim, seconds since the epoch


# A client sends the same access token with every request until it expires, and parsing and
# checking it with PyJWT is a tenth of a small request's CPU. What a check proved about those
# exact bytes stays true except for time and the key, so only that is remembered: expiry and
# the key's presence in the keyring are checked on every use. Roles, user and tenant are not
# taken from here; every request still reads them from the database.
VERIFIED_TOKENS = 4096


class JwtAccessTokens:
    def __init__(
        self, keys: SigningKeys, *, ttl: timedelta, now: Callable[[], float] = time.time
    ) -> None:
        self.keys = keys
        self.ttl = ttl
        # Seconds since the epoch; injectable so that a test may pass a token's expiry at once.
        self._now = now
        self._verified: dict[str, _Verified] = {}

    @property
    def ttl_seconds(self) -> int:
        return int(self.ttl.total_seconds())

    async def issue(
        self, *, user_id: UUID, tenant_id: UUID, roles: tuple[Role, ...], session_id: UUID
    ) -> str:
        key = await self.keys.signing_key()
        now = datetime.fromtimestamp(self._now(), UTC)
        payload: dict[str, Any] = {
            "iss": ISSUER,
            "sub": str(user_id),
            "tid": str(tenant_id),
            "roles": [role.value for role in roles],
            "jti": uuid4().hex,
            "sid": str(session_id),
            "iat": now,
            "exp": now + self.ttl,
        }
        return jwt.encode(payload, key.material, algorithm=ALGORITHM, headers={"kid": key.kid})

    async def verify(self, token: str) -> AccessClaims:
        seen = self._verified.get(token)
        if seen is not None:
            # Expired once now reaches exp (no leeway), as below.
            if self._now() < seen.expires and await self.keys.holds(seen.kid):
                return seen.claims
            del self._verified[token]
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = await self.keys.get(kid) if isinstance(kid, str) and KID.fullmatch(kid) else None
            if key is None:
                raise Unauthenticated(INVALID_CREDENTIALS)
            # The algorithm is pinned: "none", RS256 or anything but HS256 is refused.
            claims = jwt.decode(
                token,
                key.material,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                # exp is checked below, by this object's clock rather than PyJWT's.
                options={"require": REQUIRED_CLAIMS, "verify_exp": False},
            )
            expires = int(claims["exp"])
            if expires <= self._now():
                raise Unauthenticated(INVALID_CREDENTIALS)
            verified = _Verified(
                AccessClaims(
                    user_id=UUID(claims["sub"]),
                    tenant_id=UUID(claims["tid"]),
                    roles=tuple(Role(role) for role in claims.get("roles", [])),
                    token_id=str(claims["jti"]),
                    expires_at=datetime.fromtimestamp(claims["exp"], UTC),
                    # Not required: tokens issued before the claim existed stay good until exp.
                    session_id=UUID(claims["sid"]) if "sid" in claims else None,
                ),
                kid=key.kid,
                expires=float(expires),
            )
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError, KeyError, AttributeError):
            raise Unauthenticated(INVALID_CREDENTIALS) from None
        if len(self._verified) >= VERIFIED_TOKENS:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[token] = verified
        return verified.claims

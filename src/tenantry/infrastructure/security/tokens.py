"""Access tokens: HS256 JWTs signed with the current key of a keyring.

The keyring holds one current signing key and earlier keys still accepted for verification,
so a rotation logs nobody out. It lives in a file (``TENANTRY_KEYRING_PATH``, by default under
the data directory, mode 0600); every process notices a rotation on the next unknown ``kid``
or within a second through the file's modification time.
"""

from __future__ import annotations

import base64
import os
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import jwt
import msgspec

from tenantry.domain.auth import AccessClaims
from tenantry.domain.errors import Unauthenticated
from tenantry.domain.users import Role

ALGORITHM = "HS256"
ISSUER = "tenantry"
INVALID_TOKEN = "Invalid or expired credentials."
REQUIRED_CLAIMS = ["exp", "iat", "sub", "tid", "jti", "iss"]


class SigningKey(msgspec.Struct, kw_only=True, frozen=True):
    kid: str
    secret: str  # base64url of 32 random bytes
    created_at: datetime

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r}, created_at={self.created_at.isoformat()})"

    @property
    def material(self) -> bytes:
        return base64.urlsafe_b64decode(self.secret)


class KeyringData(msgspec.Struct, kw_only=True):
    current: str
    keys: list[SigningKey]


class KeyringError(RuntimeError):
    """The keyring is missing or unreadable where it must exist."""


def new_signing_key() -> SigningKey:
    return SigningKey(
        kid=secrets.token_hex(8),
        secret=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        created_at=datetime.now(UTC),
    )


class FileKeyring:
    """A keyring kept in one JSON file, rewritten atomically on rotation."""

    def __init__(self, path: Path, *, create: bool) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._mtime = -1.0
        self._checked = 0.0
        if not path.exists():
            if not create:
                raise KeyringError(
                    f"no signing keyring at {path}; create one with `tenantry keys rotate`"
                )
            self.rotate()
        self._load()

    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
            mtime = self.path.stat().st_mtime
            data = msgspec.json.decode(raw, type=KeyringData)
        except (OSError, msgspec.DecodeError) as error:
            raise KeyringError(f"cannot read the signing keyring at {self.path}: {error}") from None
        self.keys = {key.kid: key for key in data.keys}
        if data.current not in self.keys:
            raise KeyringError(f"the keyring at {self.path} names a current key it does not hold")
        self.current = self.keys[data.current]
        self._mtime = mtime

    def refresh(self, *, force: bool = False) -> None:
        """Reload when the file changed; without ``force``, look at most once a second."""
        now = time.monotonic()
        if not force and now - self._checked < 1.0:
            return
        self._checked = now
        try:
            changed = self.path.stat().st_mtime != self._mtime
        except OSError:
            return
        if changed:
            with self._lock:
                self._load()

    def get(self, kid: str) -> SigningKey | None:
        self.refresh()
        key = self.keys.get(kid)
        if key is None:
            self.refresh(force=True)
            key = self.keys.get(kid)
        return key

    def signing_key(self) -> SigningKey:
        # A stat per issued token (rare next to verifications): a rotation signs at once.
        self.refresh(force=True)
        return self.current

    def rotate(self) -> SigningKey:
        """Add a new current key; earlier keys stay for verification until pruned."""
        with self._lock:
            existing: list[SigningKey] = []
            if self.path.exists():
                existing = msgspec.json.decode(self.path.read_bytes(), type=KeyringData).keys
            key = new_signing_key()
            self._write(KeyringData(current=key.kid, keys=[*existing, key]))
        self._checked = 0.0
        self.refresh(force=True)
        return key

    def prune(self, older_than: timedelta) -> list[str]:
        """Drop non-current keys created before ``older_than`` ago; return their kids."""
        with self._lock:
            data = msgspec.json.decode(self.path.read_bytes(), type=KeyringData)
            cutoff = datetime.now(UTC) - older_than
            kept = [k for k in data.keys if k.kid == data.current or k.created_at >= cutoff]
            dropped = [k.kid for k in data.keys if k not in kept]
            self._write(KeyringData(current=data.current, keys=kept))
        self.refresh(force=True)
        return dropped

    def _write(self, data: KeyringData) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(msgspec.json.format(msgspec.json.encode(data)))
        os.replace(temporary, self.path)


class JwtAccessTokens:
    def __init__(self, keyring: FileKeyring, *, ttl: timedelta) -> None:
        self.keyring = keyring
        self.ttl = ttl

    @property
    def ttl_seconds(self) -> int:
        return int(self.ttl.total_seconds())

    def issue(self, *, user_id: UUID, tenant_id: UUID, roles: tuple[Role, ...]) -> str:
        key = self.keyring.signing_key()
        now = datetime.now(UTC)
        payload: dict[str, Any] = {
            "iss": ISSUER,
            "sub": str(user_id),
            "tid": str(tenant_id),
            "roles": [role.value for role in roles],
            "jti": uuid4().hex,
            "iat": now,
            "exp": now + self.ttl,
        }
        return jwt.encode(payload, key.material, algorithm=ALGORITHM, headers={"kid": key.kid})

    def verify(self, token: str) -> AccessClaims:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self.keyring.get(kid) if isinstance(kid, str) and len(kid) <= 64 else None
            if key is None:
                raise Unauthenticated(INVALID_TOKEN)
            # The algorithm is pinned: "none", RS256 or anything but HS256 is refused.
            claims = jwt.decode(
                token,
                key.material,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": REQUIRED_CLAIMS},
            )
            return AccessClaims(
                user_id=UUID(claims["sub"]),
                tenant_id=UUID(claims["tid"]),
                roles=tuple(Role(role) for role in claims.get("roles", [])),
                token_id=str(claims["jti"]),
                expires_at=datetime.fromtimestamp(claims["exp"], UTC),
            )
        except (jwt.PyJWTError, ValueError, TypeError, KeyError, AttributeError):
            raise Unauthenticated(INVALID_TOKEN) from None

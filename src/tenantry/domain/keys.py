"""Signing keys: a keyring of one current key plus earlier keys still trusted for verification.

A rotation adds a new current key and keeps the others, so tokens signed before it stay valid
until they expire; pruning then drops the keys no live token can use.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any

from tenantry.domain.errors import Invalid


@dataclass(frozen=True, repr=False)
class SigningKey:
    kid: str
    secret: str  # base64url of 32 random bytes
    created_at: datetime

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r}, created_at={self.created_at.isoformat()})"

    @property
    def material(self) -> bytes:
        return base64.urlsafe_b64decode(self.secret)


def new_signing_key(now: datetime) -> SigningKey:
    return SigningKey(
        kid=secrets.token_hex(8),
        secret=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        created_at=now,
    )


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown of a key: never its secret."""

    kid: str
    created_at: datetime
    current: bool


@dataclass(frozen=True)
class Keyring:
    current: SigningKey
    keys: Mapping[str, SigningKey]
    # The store's version of the secret this was read from (0: not stored yet).
    version: int = 0

    @classmethod
    def first(cls, key: SigningKey) -> Keyring:
        return cls(current=key, keys={key.kid: key})

    def rotated(self, key: SigningKey) -> Keyring:
        return Keyring(current=key, keys={**self.keys, key.kid: key}, version=self.version)

    def pruned(self, cutoff: datetime) -> tuple[Keyring, list[str]]:
        """Drop keys retired before ``cutoff``; return the kept ring and the dropped kids.

        A key signs until the next one replaces it, so it is retired at its successor's
        creation, not its own: a year-old key replaced a minute ago still verifies live tokens.
        """
        ordered = sorted(self.keys.values(), key=lambda k: k.created_at)
        retired_at = {key.kid: successor.created_at for key, successor in pairwise(ordered)}
        kept = {
            kid: key
            for kid, key in self.keys.items()
            if key is self.current or retired_at.get(kid, key.created_at) >= cutoff
        }
        dropped = [kid for kid in self.keys if kid not in kept]
        return Keyring(current=self.current, keys=kept, version=self.version), dropped

    def describe(self) -> list[KeyInfo]:
        return [
            KeyInfo(kid=key.kid, created_at=key.created_at, current=key is self.current)
            # The current key first, then newest first.
            for key in sorted(
                self.keys.values(),
                key=lambda k: (k is not self.current, -k.created_at.timestamp()),
            )
        ]

    def as_secret(self) -> dict[str, Any]:
        return {
            "current": self.current.kid,
            "keys": [
                {"kid": k.kid, "secret": k.secret, "created_at": k.created_at.isoformat()}
                for k in self.keys.values()
            ],
        }

    @classmethod
    def from_secret(cls, data: Mapping[str, Any], version: int) -> Keyring:
        try:
            keys = {
                item["kid"]: SigningKey(
                    kid=str(item["kid"]),
                    secret=str(item["secret"]),
                    created_at=datetime.fromisoformat(item["created_at"]),
                )
                for item in data["keys"]
            }
            current = keys[data["current"]]
        except (KeyError, TypeError, ValueError):
            raise Invalid("The stored signing keyring is malformed.") from None
        return cls(current=current, keys=keys, version=version)

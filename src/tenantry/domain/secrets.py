"""Secrets: named values held by a secret store (Vault, or the environment and a local file).

A store holds a few named secrets, each a small mapping with a version that grows on every
write; a write can be made conditional on the version it read (check-and-set), so two
processes rotating at once cannot lose each other's key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tenantry.domain.errors import DomainError

DATABASE = "database"
S3 = "s3"
KEYRING = "keyring"
NAMES = (DATABASE, S3, KEYRING)


@dataclass(frozen=True, repr=False)
class Secret:
    data: Mapping[str, Any]
    version: int

    def __repr__(self) -> str:
        # The values never reach a log line or a traceback, only the keys.
        return f"Secret(keys={sorted(self.data)!r}, version={self.version})"


class SecretNotFound(DomainError):
    """The store answers, but holds no such secret."""


class SecretsUnavailable(DomainError):
    """The store cannot be reached (or refuses us) right now."""


class SecretStore(Protocol):
    """Named secrets (``tenantry.domain.secrets.NAMES``) with versions for check-and-set."""

    async def read(self, name: str, *, fresh: bool = False) -> Secret:
        """The secret, from a cache unless ``fresh``; raise ``SecretNotFound`` when the store
        holds none and ``SecretsUnavailable`` when it cannot be reached."""
        ...

    async def write(self, name: str, data: Mapping[str, Any], *, cas: int) -> int:
        """Store a new version only if the current one is ``cas`` (0: none yet); return the new
        version, or raise ``StaleVersion`` when another writer came first."""
        ...

    async def ping(self) -> None:
        """Raise unless the store answers and lets us read."""
        ...

    def describe(self, name: str) -> str:
        """Where an operator finds the secret, for messages (never its value)."""
        ...

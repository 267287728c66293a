"""Secrets: named values held by a secret store (Vault, or the environment and a local file).

A store holds a few named secrets, each a small mapping with a version that grows on every
write; a write can be made conditional on the version it read (check-and-set), so two
processes rotating at once cannot lose each other's key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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

"""The JWT signing keyring: rotate, list and prune, from the API or the operator's console.

The keyring is one secret in the secret store; every change is a check-and-set write, so two
rotations at once (two API processes, or the CLI beside the API) both land, one after the other.
"""

from __future__ import annotations

from datetime import timedelta

from tenantry.application.audit import record
from tenantry.application.tenants import require_superuser
from tenantry.domain.auth import Actor
from tenantry.domain.errors import Conflict, StaleVersion
from tenantry.domain.keys import KeyInfo, Keyring, new_signing_key
from tenantry.domain.ports import Clock, UnitOfWork
from tenantry.domain.secrets import KEYRING, SecretNotFound, SecretStore

# Check-and-set attempts before a rotation gives up on a keyring that keeps changing.
WRITE_ATTEMPTS = 5


async def read_keyring(secrets: SecretStore, *, fresh: bool = False) -> Keyring:
    secret = await secrets.read(KEYRING, fresh=fresh)
    return Keyring.from_secret(secret.data, secret.version)


class RotateSigningKey:
    """Add a new current key. Earlier keys keep verifying until pruned.

    A superuser's rotation (the API's) is on the audit trail of the superuser's tenant, the
    platform's, as ``signing_key.rotated`` with the new key's id. The keyring lives in the
    secret store, so no transaction holds both: the event is written once the keyring is, and
    a rotation whose event cannot be written raises after the rotation took effect."""

    def __init__(self, secrets: SecretStore, clock: Clock, uow: UnitOfWork | None = None) -> None:
        self.secrets = secrets
        self.clock = clock
        self.uow = uow

    async def __call__(self, actor: Actor | None = None) -> list[KeyInfo]:
        """``actor`` is None only for the operator's console (`tenantry keys rotate`)."""
        if actor is not None:
            require_superuser(actor)
        described = await self._rotate()
        if actor is not None and self.uow is not None:
            async with self.uow:
                current = described[0]
                await record(
                    self.uow,
                    actor,
                    "signing_key.rotated",
                    ("signing_key", None),
                    changes={"after": {"kid": current.kid, "keys": len(described)}},
                )
                await self.uow.commit()
        return described

    async def _rotate(self) -> list[KeyInfo]:
        for _ in range(WRITE_ATTEMPTS):
            key = new_signing_key(self.clock.now())
            try:
                keyring = (await read_keyring(self.secrets, fresh=True)).rotated(key)
            except SecretNotFound:
                keyring = Keyring.first(key)
            try:
                await self.secrets.write(KEYRING, keyring.as_secret(), cas=keyring.version)
            except StaleVersion:
                continue
            return keyring.describe()
        raise Conflict("The signing keyring kept changing during the rotation; try again.")


class EnsureKeyring:
    """Create a keyring with one key when the store has none; leave an existing one alone."""

    def __init__(self, secrets: SecretStore, clock: Clock) -> None:
        self.rotate = RotateSigningKey(secrets, clock)
        self.secrets = secrets

    async def __call__(self) -> bool:
        """True when a keyring was created."""
        try:
            await read_keyring(self.secrets, fresh=True)
        except SecretNotFound:
            await self.rotate()
            return True
        return False


class ListSigningKeys:
    def __init__(self, secrets: SecretStore) -> None:
        self.secrets = secrets

    async def __call__(self, actor: Actor | None = None) -> list[KeyInfo]:
        if actor is not None:
            require_superuser(actor)
        return (await read_keyring(self.secrets, fresh=True)).describe()


class PruneSigningKeys:
    """Drop the keys retired longer ago than a token lives: no valid token uses them."""

    def __init__(self, secrets: SecretStore, clock: Clock, *, token_lifetime: timedelta) -> None:
        self.secrets = secrets
        self.clock = clock
        self.token_lifetime = token_lifetime

    async def __call__(self) -> list[str]:
        for _ in range(WRITE_ATTEMPTS):
            keyring, dropped = (await read_keyring(self.secrets, fresh=True)).pruned(
                self.clock.now() - self.token_lifetime
            )
            if not dropped:
                return []
            try:
                await self.secrets.write(KEYRING, keyring.as_secret(), cas=keyring.version)
            except StaleVersion:
                continue
            return dropped
        raise Conflict("The signing keyring kept changing during the prune; try again.")

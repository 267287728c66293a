"""Seeding a secret store (a development Vault) from another (the environment)."""

from __future__ import annotations

from dataclasses import dataclass

from tenantry.application.keys import EnsureKeyring
from tenantry.domain.ports import Clock
from tenantry.domain.secrets import DATABASE, S3, SecretNotFound, SecretStore


@dataclass(frozen=True)
class BootstrapReport:
    written: list[str]
    unchanged: list[str]
    keyring_created: bool


class BootstrapSecrets:
    """Copy the database and S3 secrets from ``source`` into ``target`` and make sure the
    target holds a signing keyring. Idempotent: a second run writes nothing."""

    def __init__(self, source: SecretStore, target: SecretStore, clock: Clock) -> None:
        self.source = source
        self.target = target
        self.clock = clock

    async def __call__(self) -> BootstrapReport:
        written: list[str] = []
        unchanged: list[str] = []
        for name in (DATABASE, S3):
            try:
                wanted = dict((await self.source.read(name, fresh=True)).data)
            except SecretNotFound:
                continue
            try:
                current = await self.target.read(name, fresh=True)
            except SecretNotFound:
                await self.target.write(name, wanted, cas=0)
                written.append(name)
                continue
            if dict(current.data) == wanted:
                unchanged.append(name)
            else:
                await self.target.write(name, wanted, cas=current.version)
                written.append(name)
        created = await EnsureKeyring(self.target, self.clock)()
        return BootstrapReport(written=written, unchanged=unchanged, keyring_created=created)

"""Secrets at start-up: where they live, read before serving, and the migrations' URL."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.engine import make_url

from tenantry.application.keys import EnsureKeyring, read_keyring
from tenantry.config import SecretsError, Settings
from tenantry.domain.errors import Invalid
from tenantry.domain.secrets import DATABASE, KEYRING, S3, SecretNotFound, SecretsUnavailable
from tenantry.infrastructure.clock import SystemClock
from tenantry.infrastructure.secrets.cache import CachedSecrets
from tenantry.infrastructure.secrets.environment import EnvironmentSecrets
from tenantry.infrastructure.storage.local import LocalDiskStorage

if TYPE_CHECKING:
    # Imported where used: a process without Vault or S3 does not load hvac, boto or aiohttp.
    from tenantry.infrastructure.secrets.vault import VaultSecrets
    from tenantry.infrastructure.storage.s3 import S3Storage

log = structlog.stdlib.get_logger("tenantry.bootstrap")


def secret_source(settings: Settings) -> VaultSecrets | EnvironmentSecrets:
    """Where secrets live: Vault when TENANTRY_VAULT_ADDR is set, else the environment."""
    if settings.vault_addr:
        from tenantry.infrastructure.secrets.vault import VaultSecrets

        return VaultSecrets.from_settings(settings)
    return EnvironmentSecrets(settings)


def create_secrets(settings: Settings) -> CachedSecrets:
    return CachedSecrets(secret_source(settings), ttl=settings.secrets_cache_seconds)


async def load_secrets(
    settings: Settings,
    secrets: CachedSecrets,
    clock: SystemClock,
    storage: LocalDiskStorage | S3Storage | None = None,
) -> None:
    """Read every secret this process needs before serving, so a missing Vault or path stops
    start-up with one clear line instead of failing the first request."""
    try:
        # Production never invents a key: every replica must verify every other's tokens.
        if not settings.is_production and await EnsureKeyring(secrets, clock)():
            log.info("created a signing keyring", where=secrets.describe(KEYRING))
        await read_keyring(secrets)
        if settings.vault_addr:
            await secrets.read(DATABASE)
        if settings.vault_addr and settings.storage_backend == "s3":
            # The environment's keys are in the settings already; Vault's replace them.
            s3 = (await secrets.read(S3)).data
            if storage is not None and not isinstance(storage, LocalDiskStorage):
                storage.use_credentials(s3.get("access_key_id"), s3.get("secret_access_key"))
    except (SecretNotFound, SecretsUnavailable, Invalid) as error:
        raise SecretsError(error.detail) from None


def check_secrets(settings: Settings) -> None:
    """`tenantry serve` and `worker` call this first: a secrets problem ends the command with
    one line, before any server starts."""

    async def check() -> None:
        secrets = create_secrets(settings)
        try:
            await load_secrets(settings, secrets, SystemClock())
        finally:
            await secrets.close()

    asyncio.run(check())


def migration_url(settings: Settings) -> str:
    """The owner's URL for migrations, with its password from Vault when Vault holds it."""
    url = settings.migration_url
    if not settings.vault_addr:
        return url

    async def read() -> Mapping[str, Any]:
        return (await secret_source(settings).read(DATABASE)).data

    try:
        values = asyncio.run(read())
    except (SecretNotFound, SecretsUnavailable) as error:
        raise SecretsError(error.detail) from None
    password = values.get("migration_password") or values.get("password")
    if not password:
        return url
    return make_url(url).set(password=password).render_as_string(hide_password=False)

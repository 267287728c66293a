"""The signing keyring (``keys``) and Vault (``vault``)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click

from tenantry.cli.common import settings_errors_exit
from tenantry.config import SecretsError, Settings, load_settings

if TYPE_CHECKING:
    from tenantry.domain.secrets import SecretStore


@click.group()
def keys() -> None:
    """The JWT signing keyring."""


@keys.command()
@settings_errors_exit
def rotate() -> None:
    """Add a new current signing key. Tokens signed with earlier keys keep working."""
    from tenantry.application.keys import RotateSigningKey
    from tenantry.domain.secrets import KEYRING
    from tenantry.infrastructure.clock import SystemClock

    async def run(secrets: SecretStore, _: Settings) -> str:
        described = await RotateSigningKey(secrets, SystemClock())()
        return (
            f"New current signing key {described[0].kid} in {secrets.describe(KEYRING)} "
            f"({len(described)} keys)."
        )

    click.echo(_run_with_secrets(run))


@keys.command("list")
@settings_errors_exit
def list_keys() -> None:
    """Show the keys of the keyring, newest first (never their secrets)."""
    from tenantry.application.keys import ListSigningKeys

    async def run(secrets: SecretStore, _: Settings) -> str:
        described = await ListSigningKeys(secrets)()
        return "\n".join(
            f"{key.kid}  {key.created_at.isoformat(timespec='seconds')}"
            + ("  current" if key.current else "")
            for key in described
        )

    click.echo(_run_with_secrets(run))


@keys.command()
@settings_errors_exit
def prune() -> None:
    """Drop keys retired longer ago than the access-token lifetime: no live token uses them."""
    from tenantry.application.keys import PruneSigningKeys
    from tenantry.infrastructure.clock import SystemClock

    async def run(secrets: SecretStore, settings: Settings) -> str:
        dropped = await PruneSigningKeys(
            secrets,
            SystemClock(),
            token_lifetime=timedelta(seconds=settings.access_token_ttl_seconds),
        )()
        return f"Dropped {len(dropped)} key(s): {', '.join(dropped) or 'none'}."

    click.echo(_run_with_secrets(run))


@click.group()
def vault() -> None:
    """Vault / OpenBao (TENANTRY_VAULT_ADDR)."""


@vault.command("bootstrap")
@settings_errors_exit
def vault_bootstrap() -> None:
    """Write the development secrets into Vault: the database password and S3 keys from the
    environment, and a signing keyring when Vault holds none. Running it again changes nothing.
    """
    from tenantry.application.secrets import BootstrapSecrets
    from tenantry.infrastructure.clock import SystemClock
    from tenantry.infrastructure.secrets.environment import EnvironmentSecrets
    from tenantry.infrastructure.secrets.vault import VaultSecrets

    async def run(target: SecretStore, settings: Settings) -> str:
        report = await BootstrapSecrets(EnvironmentSecrets(settings), target, SystemClock())()
        return (
            f"Vault at {settings.vault_addr}: wrote {', '.join(report.written) or 'nothing'}; "
            f"unchanged {', '.join(report.unchanged) or 'nothing'}; "
            + ("created the signing keyring." if report.keyring_created else "keyring kept.")
        )

    settings = load_settings()
    settings.required("vault_addr")
    click.echo(_run_with_secrets(run, VaultSecrets.from_settings(settings)))


def _run_with_secrets(
    action: Callable[[SecretStore, Settings], Coroutine[Any, Any, str]],
    store: SecretStore | None = None,
) -> str:
    """Run an action against the configured secret store; an unreachable store or a domain
    error ends the command with one line."""
    from tenantry.bootstrap.secrets import secret_source
    from tenantry.domain.errors import DomainError
    from tenantry.domain.secrets import SecretNotFound, SecretsUnavailable
    from tenantry.infrastructure.observability.logging import configure_logging

    settings = load_settings()
    configure_logging(settings)
    secrets = store or secret_source(settings)
    try:
        return asyncio.run(action(secrets, settings))
    except (SecretNotFound, SecretsUnavailable) as error:
        raise SecretsError(error.detail) from None
    except DomainError as error:
        click.echo(f"error: {error.detail}", err=True)
        sys.exit(1)

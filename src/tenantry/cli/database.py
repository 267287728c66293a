"""The database: migrations (``db upgrade``, ``db downgrade``, ``db current``) and, on a Citus
coordinator, ``db distribute``."""

from __future__ import annotations

from collections.abc import Callable

import click

from tenantry.cli.common import engines, settings_errors_exit
from tenantry.config import load_settings


@click.group()
def db() -> None:
    """Database migrations (embedded PostgreSQL unless TENANTRY_DATABASE_URL is set)."""


def _with_database(action: Callable[[str], None]) -> None:
    from tenantry.bootstrap.secrets import migration_url
    from tenantry.infrastructure.observability.logging import configure_logging

    settings = load_settings()
    configure_logging(settings)
    if settings.is_production:
        settings.required("database_url")
    with engines(settings, redis=False) as ready:
        action(migration_url(ready))


@db.command()
@click.argument("revision", default="head")
@settings_errors_exit
def upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: head)."""
    from tenantry.infrastructure.db import migrations

    _with_database(lambda url: migrations.upgrade(url, revision))
    click.echo(f"Upgraded to {revision}.")


@db.command()
@click.argument("revision", default="-1")
@settings_errors_exit
def downgrade(revision: str) -> None:
    """Revert migrations down to REVISION (default: one step; 'base' for all)."""
    from tenantry.infrastructure.db import migrations

    _with_database(lambda url: migrations.downgrade(url, revision))
    click.echo(f"Downgraded to {revision}.")


@db.command()
@settings_errors_exit
def current() -> None:
    """Show the revision the database is at."""
    from tenantry.infrastructure.db import migrations

    _with_database(
        lambda url: click.echo(migrations.current(url) or "(no revision: empty database)")
    )


@db.command()
@settings_errors_exit
def distribute() -> None:
    """Distribute the schema by tenant on a Citus coordinator (idempotent).

    tenants becomes a reference table and every table with a tenant_id is distributed by it,
    colocated; run it after `db upgrade`, and again after a migration that adds a table.
    See docs/scaling.md.
    """
    import asyncio

    from tenantry.infrastructure.db import citus

    def run(url: str) -> None:
        done = asyncio.run(citus.distribute_database(url))
        click.echo(
            f"Citus {done.citus}: reference table {', '.join(done.reference) or '(already)'}; "
            f"distributed by tenant_id: {', '.join(done.distributed) or '(all already)'}; "
            f"{done.keys_restored} foreign keys re-created."
        )

    try:
        _with_database(run)
    except citus.CitusMissing as error:
        raise click.ClickException(str(error)) from None

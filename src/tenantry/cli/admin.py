"""Operate tenants and their data: ``create-tenant``, ``create-superuser``, ``seed``, ``files``,
``audit``, ``tenants``."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING

import click

from tenantry.cli.common import engines, settings_errors_exit
from tenantry.config import Settings, load_settings

if TYPE_CHECKING:
    from tenantry.bootstrap import Container


@click.command("create-tenant")
@click.option("--name", required=True, help="Display name.")
@click.option("--slug", required=True, help="The tenant's sign-in name (3-63 of a-z 0-9 -).")
@click.option("--owner-username", required=True)
@click.option("--owner-email", required=True)
@click.password_option("--owner-password", help="Prompted for when not given.")
@settings_errors_exit
def create_tenant(
    name: str, slug: str, owner_username: str, owner_email: str, owner_password: str
) -> None:
    """Create a tenant and its owner."""
    from tenantry.application.tenants import CreateTenant, OwnerInput

    owner = OwnerInput(username=owner_username, email=owner_email, password=owner_password)

    async def run(container: Container) -> str:
        async with container.unit_of_work() as uow:
            tenant, user = await CreateTenant(container.identity(uow))(
                name=name, slug=slug, owner=owner, client=None
            )
        return f"Created tenant {tenant.slug} ({tenant.id}) with owner {user.username} ({user.id})."

    click.echo(_run_with_container(run))


@click.command("create-superuser")
@click.option("--username", required=True)
@click.option("--email", required=True)
@click.password_option("--password", help="Prompted for when not given.")
@settings_errors_exit
def create_superuser(username: str, email: str, password: str) -> None:
    """Create a platform superuser (in the platform tenant, made on first use)."""
    from tenantry.application.tenants import CreateSuperuser

    async def run(container: Container) -> str:
        async with container.unit_of_work() as uow:
            user = await CreateSuperuser(container.identity(uow))(
                username=username, email=email, password=password
            )
        return f"Created superuser {user.username} ({user.id}); sign in with tenant 'platform'."

    click.echo(_run_with_container(run))


def _run_with_container(action: Callable[[Container], Awaitable[str]]) -> str:
    """Run an async action against the configured (or embedded) engines; domain errors exit 1."""
    from tenantry import bootstrap
    from tenantry.domain.errors import DomainError
    from tenantry.infrastructure.observability.logging import configure_logging

    settings = load_settings()
    configure_logging(settings)

    async def run(ready: Settings) -> str:
        container = bootstrap.Container(ready)
        try:
            await container.start()
            return await action(container)
        finally:
            await container.close()
            await container.alchemy.get_engine().dispose()

    with engines(settings) as ready:
        try:
            return asyncio.run(run(ready))
        except DomainError as error:
            fields = "; ".join(f"{k} {v}" for k, v in error.fields.items())
            click.echo(f"error: {error.detail}{' (' + fields + ')' if fields else ''}", err=True)
            sys.exit(1)


@click.command()
@click.option("--tenants", type=click.IntRange(1, 10_000), default=3, show_default=True)
@click.option(
    "--projects", type=click.IntRange(0, 100_000), default=20, show_default=True, help="Per tenant."
)
@click.option(
    "--documents", type=click.IntRange(0, 1_000), default=5, show_default=True, help="Per project."
)
@click.option("--password", default="seed password 1!", show_default=True, help="Every owner's.")
@click.option("--prefix", default="seed", show_default=True, help="Slugs are <prefix>-0001 ...")
@settings_errors_exit
def seed(tenants: int, projects: int, documents: int, password: str, prefix: str) -> None:
    """Fill the database with realistic demo data: tenants, owners, projects, documents."""
    from tenantry.infrastructure.db.seed import seed as seed_data

    async def run(container: Container) -> str:
        report = await seed_data(
            container.alchemy.get_session,
            tenants=tenants,
            projects=projects,
            documents=documents,
            password_hash=await container.passwords.hash(password),
            prefix=prefix,
        )
        first = report.slugs[0] if report.slugs else f"{prefix}-0001"
        return (
            f"Seeded {report.tenants} tenants ({report.skipped} already there), "
            f"{report.projects} projects, {report.documents} documents.\n"
            f"Sign in: tenant {first}, login owner@{first}.example, password {password!r}."
        )

    click.echo(_run_with_container(run))


@click.group()
def files() -> None:
    """Stored files."""


@files.command()
@click.option(
    "--orphan-minutes",
    type=click.IntRange(1),
    default=60,
    show_default=True,
    help="Leave objects younger than this: they may be uploads in progress.",
)
@settings_errors_exit
def sweep(orphan_minutes: int) -> None:
    """Purge files deleted more than TENANTRY_FILE_RETENTION_DAYS ago, and orphan objects."""
    from tenantry.application.files import SweepFiles

    async def run(container: Container) -> str:
        async with container.unit_of_work() as uow:
            report = await SweepFiles(container.files(uow))(
                retention=timedelta(days=container.settings.file_retention_days),
                orphan_age=timedelta(minutes=orphan_minutes),
            )
        return (
            f"Purged {report.purged} deleted files, {report.orphans} orphan objects and "
            f"{report.unfinished} unfinished uploads."
        )

    click.echo(_run_with_container(run))


@click.group()
def audit() -> None:
    """The audit trail."""


@audit.command()
@settings_errors_exit
def purge() -> None:
    """Purge audit events older than TENANTRY_AUDIT_RETENTION_DAYS, every tenant's (the
    worker does this daily)."""

    async def run(container: Container) -> str:
        purged = await container.purge_audit_events()
        days = container.settings.audit_retention_days
        return f"Purged {purged} audit events older than {days} days."

    click.echo(_run_with_container(run))


@click.group()
def tenants() -> None:
    """Tenants as a whole."""


@tenants.command()
@click.argument("slug", required=False)
@click.option("--confirm", help="The tenant's slug, typed again.")
@click.option(
    "--resume", is_flag=True, help="Finish every unfinished erasure instead (no SLUG then)."
)
@settings_errors_exit
def erase(slug: str | None, confirm: str | None, resume: bool) -> None:
    """Erase the tenant SLUG for good: suspend it, then remove every row and stored object of
    it, and the tenant, here and now (logged as an operator's erasure)."""
    from tenantry.application.erasure import EraseTenantAsOperator, FinishErasures

    if resume == (slug is not None):
        raise click.UsageError("give a SLUG to erase, or --resume")

    async def run(container: Container) -> str:
        erasures = container.run_erasure()
        if resume:
            done = await FinishErasures(
                units=container.unit_of_work, run=erasures, clock=container.clock
            )()
        else:
            assert slug is not None
            async with container.unit_of_work() as uow:
                asked = await EraseTenantAsOperator(uow, container.clock)(slug, confirm)
            done = [ended for ended in [await erasures(asked.id)] if ended is not None]
        return (
            "\n".join(
                f"Erased tenant {erasure.slug} ({erasure.tenant_id}): {erasure.state}, "
                f"{erasure.progress.rows} rows and {erasure.progress.objects} objects removed."
                for erasure in done
            )
            or "No unfinished erasure."
        )

    click.echo(_run_with_container(run))

"""The ``tenantry`` command: run the product, migrate the database, operate it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from datetime import timedelta
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import msgspec

from tenantry.config import SecretsError, Settings, SettingsError, load_settings, redact_url

if TYPE_CHECKING:
    from tenantry.bootstrap import Container
    from tenantry.domain.ports import SecretStore

# Each command imports the stack it runs when it runs: `tenantry --help` and a bad setting
# answer at once instead of after seconds of loading every adapter.

EMBEDDED_DATABASE = "tenantry"
F = TypeVar("F", bound=Callable[..., Any])


def settings_errors_exit(func: F) -> F:
    """A bad setting ends the command with one line naming the variable, not a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (SettingsError, SecretsError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def engines(settings: Settings, *, redis: bool = True) -> Iterator[Settings]:
    """Settings whose unset database and Redis URLs point at embedded engines, started here.

    The engines keep their data under ``TENANTRY_DATA_DIR`` and stop when the block ends.
    """
    from tenantry.infrastructure.db import migrations
    from tenantry.infrastructure.db.rls import APP_ROLE
    from tenantry.infrastructure.embedded import EmbeddedPostgres, EmbeddedRedis

    data_dir = Path(settings.data_dir)
    with contextlib.ExitStack() as stack:
        urls: dict[str, str] = {}
        if settings.database_url is None:
            postgres = EmbeddedPostgres(data_dir / "postgres")
            click.echo(f"Starting embedded PostgreSQL in {postgres.root} ...")
            postgres.start()
            stack.callback(postgres.stop)
            postgres.ensure_database(EMBEDDED_DATABASE)
            # Migrations run as the owner; the API as the role they create, held to RLS.
            urls["migration_database_url"] = postgres.url(EMBEDDED_DATABASE)
            urls["database_url"] = postgres.url(EMBEDDED_DATABASE, user=APP_ROLE)
            # The embedded engine is ours to keep current; configured servers are the operator's.
            migrations.upgrade(urls["migration_database_url"])
        if redis and settings.redis_url is None:
            embedded_redis = EmbeddedRedis(data_dir / "redis")
            click.echo(f"Starting embedded Redis in {embedded_redis.root} ...")
            embedded_redis.start()
            stack.callback(embedded_redis.stop)
            urls["redis_url"] = embedded_redis.url
        yield msgspec.structs.replace(settings, **urls)


@click.group()
@click.version_option(package_name="tenantry")
def main() -> None:
    """Tenantry: a multi-tenant SaaS API foundation."""


@main.command()
@click.option("--host", default=None, help="Address to bind (default: TENANTRY_HOST).")
@click.option("--port", type=int, default=None, help="Port to bind (default: TENANTRY_PORT).")
@settings_errors_exit
def dev(host: str | None, port: int | None) -> None:
    """Run everything on one machine: embedded PostgreSQL and Redis, migrations, the API.

    Set TENANTRY_DATABASE_URL or TENANTRY_REDIS_URL to use real servers instead.
    Ctrl-C stops the API and the embedded engines.
    """
    settings = load_settings(**_bind(host, port))
    import uvicorn

    from tenantry import bootstrap
    from tenantry.infrastructure.db import migrations
    from tenantry.infrastructure.observability.logging import configure_logging

    configure_logging(settings)
    with engines(settings) as settings:
        migrations.upgrade(settings.migration_url)
        app = bootstrap.create_app(settings, with_worker=True, freeze_heap=True)
        base = f"http://{settings.host}:{settings.port}"
        click.echo(
            "\nTenantry is starting:\n"
            f"  API          {base}/api/v1/info\n"
            f"  API docs     {base}/docs\n"
            f"  Health       {base}/health   Ready {base}/ready\n"
            f"  PostgreSQL   {redact_url(settings.required('database_url'))}\n"
            f"  Redis        {settings.required('redis_url')}\n"
            "  Worker       in this process (tasks run end to end)\n"
            "Press Ctrl-C to stop.\n"
        )
        # uvicorn re-raises SIGTERM after its graceful shutdown; as SystemExit it unwinds through
        # `engines`, which stops PostgreSQL and Redis instead of leaving them orphaned.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            uvicorn.run(app, **_uvicorn_options(settings))
        except KeyboardInterrupt:
            pass
        finally:
            # A terminal's Ctrl-C reaches `uv run` and us alike, and uv passes it on again:
            # that second SIGINT must not cut the engines' shutdown short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    click.echo("Tenantry stopped.")


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@main.command()
@click.option("--host", default=None, help="Address to bind (default: TENANTRY_HOST).")
@click.option("--port", type=int, default=None, help="Port to bind (default: TENANTRY_PORT).")
@click.option("--workers", type=int, default=1, show_default=True, help="API processes.")
@settings_errors_exit
def serve(host: str | None, port: int | None, workers: int) -> None:
    """Run the API alone against the configured PostgreSQL and Redis (production mode).

    TENANTRY_ENV defaults to production here.
    """
    settings = load_settings(defaults={"env": "production"}, **_bind(host, port))
    settings.required("database_url")
    settings.required("redis_url")
    import uvicorn

    from tenantry import bootstrap
    from tenantry.infrastructure.observability.logging import configure_logging

    configure_logging(settings)
    bootstrap.check_secrets(settings)
    if workers > 1:
        # Each worker process builds its own app from the environment, so it must say what
        # this process settled on.
        os.environ["TENANTRY_ENV"] = settings.env
        with _multiprocess_metrics(settings):
            uvicorn.run(
                "tenantry.bootstrap:create_served_app",
                factory=True,
                workers=workers,
                **_uvicorn_options(settings),
            )
    else:
        uvicorn.run(bootstrap.create_app(settings, freeze_heap=True), **_uvicorn_options(settings))


@main.command()
@settings_errors_exit
def worker() -> None:
    """Run background tasks from Redis (arq) against the configured PostgreSQL.

    Concurrency and timeouts come from TENANTRY_WORKER_CONCURRENCY and TENANTRY_TASK_*.
    SIGINT or SIGTERM stops taking jobs and lets the running ones finish.
    """
    settings = load_settings(defaults={"env": "production"})
    settings.required("database_url")
    settings.required("redis_url")
    from tenantry import bootstrap
    from tenantry.infrastructure.observability.logging import configure_logging

    configure_logging(settings)
    bootstrap.check_secrets(settings)
    asyncio.run(bootstrap.run_worker(settings))


@contextlib.contextmanager
def _multiprocess_metrics(settings: Settings) -> Iterator[None]:
    """API processes that share their metrics through files in a fresh directory (removed at
    the end), unless the operator named one in PROMETHEUS_MULTIPROC_DIR."""
    from tenantry.infrastructure.observability.metrics import MULTIPROC_DIR_ENV

    if not settings.metrics_enabled or os.environ.get(MULTIPROC_DIR_ENV):
        yield
        return
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    path = tempfile.mkdtemp(prefix="prometheus-", dir=settings.data_dir)
    # Set before uvicorn spawns the processes: they import prometheus_client afresh and pick
    # multiprocess mode from it.
    os.environ[MULTIPROC_DIR_ENV] = path
    try:
        yield
    finally:
        del os.environ[MULTIPROC_DIR_ENV]
        shutil.rmtree(path, ignore_errors=True)


def _bind(host: str | None, port: int | None) -> dict[str, Any]:
    return {k: v for k, v in {"host": host, "port": port}.items() if v is not None}


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,  # the app writes its own access line, with the request id
        # Given explicitly: uvicorn's default believes X-Forwarded-For from 127.0.0.1 (or its
        # FORWARDED_ALLOW_IPS), and any local client could then pick the address limits key on.
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": settings.trusted_proxies,
        "server_header": False,
        "lifespan": "on",
    }


@main.command("create-tenant")
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


@main.command("create-superuser")
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


@main.command()
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


@main.group()
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
        return f"Purged {report.purged} deleted files and {report.orphans} orphan objects."

    click.echo(_run_with_container(run))


@main.group()
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


@main.group()
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
    from tenantry import bootstrap
    from tenantry.domain.errors import DomainError
    from tenantry.domain.secrets import SecretNotFound, SecretsUnavailable
    from tenantry.infrastructure.observability.logging import configure_logging

    settings = load_settings()
    configure_logging(settings)
    secrets = store or bootstrap.secret_source(settings)
    try:
        return asyncio.run(action(secrets, settings))
    except (SecretNotFound, SecretsUnavailable) as error:
        raise SecretsError(error.detail) from None
    except DomainError as error:
        click.echo(f"error: {error.detail}", err=True)
        sys.exit(1)


@main.group()
def db() -> None:
    """Database migrations (embedded PostgreSQL unless TENANTRY_DATABASE_URL is set)."""


def _with_database(action: Callable[[str], None]) -> None:
    from tenantry import bootstrap
    from tenantry.infrastructure.observability.logging import configure_logging

    settings = load_settings()
    configure_logging(settings)
    if settings.is_production:
        settings.required("database_url")
    with engines(settings, redis=False) as ready:
        action(bootstrap.migration_url(ready))


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

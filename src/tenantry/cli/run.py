"""Run the product: ``dev`` (everything on embedded engines), ``serve`` (the API), ``worker``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from tenantry.cli.common import engines, settings_errors_exit
from tenantry.config import Settings, load_settings, redact_url


@click.command()
@click.option("--host", default=None, help="Address to bind (default: TENANTRY_HOST).")
@click.option("--port", type=int, default=None, help="Port to bind (default: TENANTRY_PORT).")
@click.option(
    "--reload",
    is_flag=True,
    help="Restart the API and its worker when a source file changes (the engines keep running).",
)
@click.option(
    "--reload-dir",
    "reload_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="With --reload, watch this directory too (repeatable); the tenantry package always is.",
)
@settings_errors_exit
def dev(host: str | None, port: int | None, reload: bool, reload_dirs: tuple[Path, ...]) -> None:
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
        base = f"http://{settings.host}:{settings.port}"
        click.echo(
            "\nTenantry is starting:\n"
            f"  API          {base}/api/v1/info\n"
            f"  API docs     {base}/docs\n"
            f"  Health       {base}/health   Ready {base}/ready\n"
            f"  PostgreSQL   {redact_url(settings.required('database_url'))}\n"
            f"  Redis        {settings.required('redis_url')}\n"
            "  Worker       in this process (tasks run end to end)\n"
            + ("  Reload       when a source file changes\n" if reload else "")
            + "Press Ctrl-C to stop.\n"
        )
        # uvicorn re-raises SIGTERM after its graceful shutdown; as SystemExit it unwinds through
        # `engines`, which stops PostgreSQL and Redis instead of leaving them orphaned.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            if reload:
                _serve_reloading(settings, reload_dirs)
            else:
                app = bootstrap.create_app(settings, with_worker=True, freeze_heap=True)
                uvicorn.run(app, **_uvicorn_options(settings))
        except KeyboardInterrupt:
            pass
        finally:
            # A terminal's Ctrl-C reaches `uv run` and us alike, and uv passes it on again:
            # that second SIGINT must not cut the engines' shutdown short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    click.echo("Tenantry stopped.")


def _serve_reloading(settings: Settings, extra_dirs: tuple[Path, ...]) -> None:
    """uvicorn's reloader runs the API (and its worker) in a child process that it starts
    again when a watched file changes. The child builds its app from the environment, pointed
    here at the engines this process keeps running."""
    import uvicorn

    import tenantry

    os.environ.update(
        TENANTRY_ENV=settings.env,
        TENANTRY_DATABASE_URL=settings.required("database_url"),
        TENANTRY_MIGRATION_DATABASE_URL=settings.migration_url,
        TENANTRY_REDIS_URL=settings.required("redis_url"),
    )
    watched = [str(Path(tenantry.__file__).parent), *(str(path) for path in extra_dirs)]
    uvicorn.run(
        "tenantry.bootstrap:create_dev_app",
        factory=True,
        reload=True,
        reload_dirs=watched,
        **_uvicorn_options(settings),
    )


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@click.command()
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
    from tenantry.bootstrap.secrets import check_secrets
    from tenantry.infrastructure.observability.logging import configure_logging

    configure_logging(settings)
    check_secrets(settings)
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
        app = bootstrap.create_app(settings, freeze_heap=True, pin_cpu=settings.cpu_pinning)
        uvicorn.run(app, **_uvicorn_options(settings))


@click.command()
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
    from tenantry.bootstrap.secrets import check_secrets
    from tenantry.infrastructure.observability.logging import configure_logging

    configure_logging(settings)
    check_secrets(settings)
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
    from tenantry.infrastructure.http.server import CoalescingHttpToolsProtocol

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
        "http": CoalescingHttpToolsProtocol,
    }

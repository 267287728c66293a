"""``tenantry tasks``: the task types this installation runs."""

from __future__ import annotations

import click

from tenantry.cli.common import settings_errors_exit
from tenantry.config import load_settings


@click.group()
def tasks() -> None:
    """Background tasks."""


@tasks.command("list")
@settings_errors_exit
def list_types() -> None:
    """Every task type: built in, from installed packages (entry points of the group
    tenantry.tasks) and from TENANTRY_TASK_MODULES, with its config fields, the input file
    types it takes and where it comes from."""
    import msgspec

    from tenantry.bootstrap.handlers import find_handlers, registry_of

    settings = load_settings()
    handlers = find_handlers(settings.task_modules)
    # Built as the worker builds it: a conflict or a malformed handler fails here too.
    registry = registry_of(handlers)
    for found in handlers:
        handler = found.handler
        policy = registry.policy(handler.type)
        # The worker stops any attempt at TENANTRY_TASK_TIMEOUT_SECONDS, whatever it asks.
        timeout = min(
            policy.timeout_seconds or settings.task_timeout_seconds, settings.task_timeout_seconds
        )
        attempts = policy.max_attempts or settings.task_max_attempts
        backoff = policy.backoff_seconds or settings.task_retry_backoff_seconds
        fields = ", ".join(
            field.encode_name + ("" if field.required else "?")
            for field in msgspec.structs.fields(handler.config_type)
        )
        inputs = ", ".join(sorted(getattr(handler, "input_types", None) or ())) or "any"
        click.echo(f"{handler.type}")
        click.echo(f"    config: {{{fields}}}")
        click.echo(f"    input files: {inputs}")
        click.echo(f"    attempts: {attempts}, {timeout:g} s each, backoff from {backoff:g} s")
        click.echo(f"    from: {found.source}")

"""The ``tenantry`` command: run the product, migrate the database, operate it.

Each command imports the stack it runs when it runs: `tenantry --help` and a bad setting answer
at once instead of after seconds of loading every adapter.
"""

from __future__ import annotations

import click

from tenantry.cli import admin, database, openapi, run, secrets, tasks


@click.group()
@click.version_option(package_name="tenantry")
def main() -> None:
    """Tenantry: a multi-tenant SaaS API foundation."""


for command in (
    run.dev,
    run.serve,
    run.worker,
    admin.create_tenant,
    admin.create_superuser,
    admin.seed,
    admin.files,
    admin.audit,
    admin.tenants,
    tasks.tasks,
    secrets.keys,
    secrets.vault,
    database.db,
    openapi.openapi,
):
    main.add_command(command)

"""Every feature's database module, listed once. Importing one registers its model on the
metadata and its repository with the unit of work (``repository.IMPLEMENTATIONS``): whatever
needs every table (alembic's autogenerate, the engine's config, foreign keys named by table)
takes ``metadata`` from here, and the unit of work imports this module to serve every port."""

from __future__ import annotations

from tenantry.infrastructure.db import (  # noqa: F401
    api_keys,
    audit,
    auth,
    documents,
    erasure,
    files,
    projects,
    task_sweeps,
    tasks,
    tenant_export,
    tenants,
    usage,
    users,
    webhooks,
)
from tenantry.infrastructure.db.base import metadata

__all__ = ["metadata"]

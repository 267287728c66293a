"""Row level security on every tenant table, and the app role that is held to it.

The API and workers connect as ``tenantry_app``: no superuser, no BYPASSRLS, owner of nothing.
Migrations keep running as the owner. API keys now name their tenant, so the cross-tenant
prefix index goes.

Revision ID: 0003_row_level_security
Revises: 0002_identity
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

from tenantry.infrastructure.db.rls import (
    create_app_role,
    disable_tenant_rls,
    enable_tenant_rls,
    grant_to_app,
    revoke_from_app,
)

revision: str = "0003_row_level_security"
down_revision: str | Sequence[str] | None = "0002_identity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TENANT_TABLES = ("users", "refresh_tokens", "api_keys")


def upgrade() -> None:
    for statement in create_app_role():
        op.execute(statement)
    op.execute(grant_to_app("tenants"))
    for table in TENANT_TABLES:
        op.execute(grant_to_app(table))
        for statement in enable_tenant_rls(table):
            op.execute(statement)
    op.drop_index("ix_api_keys_prefix", table_name="api_keys")


def downgrade() -> None:
    op.create_index("ix_api_keys_prefix", "api_keys", ["prefix"], unique=False)
    for table in TENANT_TABLES:
        for statement in disable_tenant_rls(table):
            op.execute(statement)
        op.execute(revoke_from_app(table))
    op.execute(revoke_from_app("tenants"))

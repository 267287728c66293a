"""The app role no longer deletes tenants: a tenant's row goes only at the end of its erasure.

Deleting a tenant cascades to every tenant table, ``audit_events`` included, with the rights
of the tables' owner: the app role's DELETE on ``tenants`` was a way around the trail's
append-only grant (0011_audit_events) and around the erasure's own guard (0013). It is
revoked; ``remove_erased_tenant(tenant)`` deletes the row instead, under the same guard as
``erase_tenant_rows``: the tenant has an unfinished erasure in the log and is not active. It is
SECURITY DEFINER, owned by the maintenance role like the other maintenance functions,
executable by the app role only. The maintenance role may delete from ``tenants`` and read
the columns the guard and the delete need.

Revision ID: 0015_tenant_removal
Revises: 0014_usage
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

from tenantry.infrastructure.db.rls import APP_ROLE, MAINTENANCE_ROLE, hand_over_to_maintenance

# revision identifiers, used by Alembic.
revision: str = "0015_tenant_removal"
down_revision: str | Sequence[str] | None = "0014_usage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REMOVE = "remove_erased_tenant(uuid)"

REMOVE_FUNCTION = """
CREATE FUNCTION remove_erased_tenant(tenant uuid)
RETURNS boolean
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (
        SELECT FROM public.tenant_erasures AS e
        WHERE e.erased_tenant_id = tenant AND e.state <> 'finished'
    ) OR EXISTS (
        SELECT FROM public.tenants AS t WHERE t.id = tenant AND t.status = 'active'
    ) THEN
        RAISE EXCEPTION 'remove_erased_tenant: tenant % has no erasure under way', tenant
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM public.tenants AS t WHERE t.id = tenant;
    RETURN FOUND;
END
$$
"""


def upgrade() -> None:
    op.execute(f"REVOKE DELETE ON tenants FROM {APP_ROLE}")
    op.execute(f"GRANT DELETE ON tenants TO {MAINTENANCE_ROLE}")
    op.execute(REMOVE_FUNCTION)
    # Functions are executable by PUBLIC when created: revoked in the same transaction.
    op.execute(f"REVOKE ALL ON FUNCTION {REMOVE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {REMOVE} TO {APP_ROLE}")
    for statement in hand_over_to_maintenance([REMOVE]):
        op.execute(statement)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {REMOVE}")
    op.execute(f"REVOKE DELETE ON tenants FROM {MAINTENANCE_ROLE}")
    op.execute(f"GRANT DELETE ON tenants TO {APP_ROLE}")

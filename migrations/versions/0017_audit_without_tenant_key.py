"""The audit trail refers to its tenant without a foreign key.

The key's check ran on every audited write: a query locking the tenant's row (FOR KEY SHARE),
which the change itself had mostly locked already. Measured with pgbench, a project's creation
with its event: about 10% more transactions per second without it (docs/performance.md).

What the key gave, its cascade, is done by ``remove_erased_tenant`` instead: it deletes the
tenant's remaining events (those written after its erasure emptied the trail) before the
tenant's row, in the same statement's transaction, under the tenant policy for that tenant.
The events of a tenant are otherwise only ever written by its own requests and tasks, which
stop when it is suspended, before its erasure starts.

Revision ID: 0017_audit_without_tenant_key
Revises: 0016_usage_stored
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

from tenantry.infrastructure.db.rls import as_maintenance_owner

# revision identifiers, used by Alembic.
revision: str = "0017_audit_without_tenant_key"
down_revision: str | Sequence[str] | None = "0016_usage_stored"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = "fk_audit_events_tenant_id_tenants"


# The guard of 0015_tenant_removal, unchanged.
REMOVE_FUNCTION = """
CREATE OR REPLACE FUNCTION remove_erased_tenant(tenant uuid)
RETURNS boolean
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    callers text := coalesce(current_setting('app.tenant_id', true), '');
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
    -- The tenant policy shows the given tenant's events only.
    PERFORM set_config('app.tenant_id', tenant::text, true);
    DELETE FROM public.audit_events AS e WHERE e.tenant_id = tenant;
    PERFORM set_config('app.tenant_id', callers, true);
    DELETE FROM public.tenants AS t WHERE t.id = tenant;
    RETURN FOUND;
END
$$
"""

# 0015_tenant_removal's body: the key's cascade removed the events.
KEYED_REMOVE_FUNCTION = """
CREATE OR REPLACE FUNCTION remove_erased_tenant(tenant uuid)
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
    op.drop_constraint(KEY, "audit_events", type_="foreignkey")
    # The function is the maintenance role's (0015_tenant_removal).
    for statement in as_maintenance_owner([REMOVE_FUNCTION]):
        op.execute(statement)


def downgrade() -> None:
    for statement in as_maintenance_owner([KEYED_REMOVE_FUNCTION]):
        op.execute(statement)
    # Events of tenants removed meanwhile would refuse the key.
    op.execute(
        "DELETE FROM audit_events AS e "
        "WHERE NOT EXISTS (SELECT FROM tenants AS t WHERE t.id = e.tenant_id)"
    )
    op.create_foreign_key(KEY, "audit_events", "tenants", ["tenant_id"], ["id"], ondelete="CASCADE")

"""Platform superusers read the audit trail across tenants: one SECURITY DEFINER function.

- ``tenantry_platform_audit(before, page_size, actor, act, target_kind, target, since, until)``
  returns one page of every tenant's events, newest first (by id, UUIDv7), the filters that
  are NULL left out, at most 200 rows. Owned by the maintenance role like the task sweeps
  (0009_task_sweeps), executable by the app role only, which calls it for superusers alone
  (application/audit.py). Its arguments are ids, names, times and a count: the SQL is fixed.
- ``audit_platform_reads``: the one policy that lets the maintenance role see every tenant's
  events, for SELECT only. Its DELETE (the retention purge, the erasure) stays held to the
  tenant it sets, as the tenant policy is the only one for DELETE.

The page takes each tenant's newest matching events through the tenant's own indexes (the
primary key, or the filter's), then the newest of those: a probe per tenant, as the task
sweeps do, and no index that does not lead with ``tenant_id``.

Revision ID: 0018_platform_audit
Revises: 0017_audit_without_tenant_key
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

from tenantry.infrastructure.db.rls import APP_ROLE, MAINTENANCE_ROLE, hand_over_to_maintenance

# revision identifiers, used by Alembic.
revision: str = "0018_platform_audit"
down_revision: str | Sequence[str] | None = "0017_audit_without_tenant_key"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PAGE = "tenantry_platform_audit(uuid, integer, uuid, text, text, uuid, timestamptz, timestamptz)"
POLICY = "audit_platform_reads"

PAGE_FUNCTION = """
CREATE FUNCTION tenantry_platform_audit(
    before uuid, page_size integer, actor uuid, act text, target_kind text, target uuid,
    since timestamptz, until timestamptz
)
RETURNS SETOF public.audit_events
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT e.*
    FROM public.tenants AS tenant
    CROSS JOIN LATERAL (
        SELECT * FROM public.audit_events AS o
        WHERE o.tenant_id = tenant.id
          AND (before IS NULL OR o.id < before)
          AND (actor IS NULL OR o.actor_id = actor)
          AND (act IS NULL OR o.action = act)
          AND (target_kind IS NULL OR o.target_type = target_kind)
          AND (target IS NULL OR o.target_id = target)
          AND (since IS NULL OR o.created_at >= since)
          AND (until IS NULL OR o.created_at < until)
        ORDER BY o.id DESC
        LIMIT least(greatest(coalesce(page_size, 0), 0), 200)
    ) AS e
    ORDER BY e.id DESC
    LIMIT least(greatest(coalesce(page_size, 0), 0), 200)
$$
"""


def upgrade() -> None:
    op.execute(
        f"CREATE POLICY {POLICY} ON audit_events FOR SELECT TO {MAINTENANCE_ROLE} USING (true)"
    )
    op.execute(PAGE_FUNCTION)
    # Functions are executable by PUBLIC when created: revoked in the same transaction.
    op.execute(f"REVOKE ALL ON FUNCTION {PAGE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {PAGE} TO {APP_ROLE}")
    for statement in hand_over_to_maintenance([PAGE]):
        op.execute(statement)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {PAGE}")
    op.execute(f"DROP POLICY {POLICY} ON audit_events")

"""The audit purge keeps the last day: ``purge_audit_events`` refuses a cutoff newer than one
day ago.

Migration 0011_audit_events let the app role purge events of any age: an app taken over could
wipe the trail of what it had just done. The function now raises (SQLSTATE 42501,
insufficient_privilege) when ``before`` is later than one day before the database's own clock,
whatever the app's clock says. The retention setting's minimum (``TENANTRY_AUDIT_RETENTION_DAYS``,
at least 1) matches it.

The function is replaced in place (``CREATE OR REPLACE``): its owner (the maintenance role),
its grants (EXECUTE for the app role only) and its pinned ``search_path`` stay. Replacing it
takes its owner's rights, lent to a migration owner that is no superuser for the transaction
as 0011 does to hand the function over.

Revision ID: 0012_audit_purge_floor
Revises: 0011_audit_events
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

from tenantry.infrastructure.db.rls import as_maintenance_owner

# revision identifiers, used by Alembic.
revision: str = "0012_audit_purge_floor"
down_revision: str | Sequence[str] | None = "0011_audit_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FLOOR = """
    -- The last day of history is out of the caller's reach, by the database's clock.
    IF before > clock_timestamp() - interval '1 day' THEN
        RAISE EXCEPTION 'purge_audit_events: cutoff % is less than one day ago', before
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Audit events younger than one day are never purged.';
    END IF;
"""

PURGE_FUNCTION = """
CREATE OR REPLACE FUNCTION purge_audit_events(tenant uuid, before timestamptz, batch integer)
RETURNS integer
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    callers text := coalesce(current_setting('app.tenant_id', true), '');
    purged integer;
BEGIN{floor}
    -- The tenant policy shows the given tenant's rows only.
    PERFORM set_config('app.tenant_id', tenant::text, true);
    DELETE FROM public.audit_events AS e
    USING (
        SELECT o.id FROM public.audit_events AS o
        WHERE o.tenant_id = tenant AND o.created_at < before
        ORDER BY o.created_at
        LIMIT batch
    ) AS aged
    WHERE e.tenant_id = tenant AND e.id = aged.id;
    GET DIAGNOSTICS purged = ROW_COUNT;
    PERFORM set_config('app.tenant_id', callers, true);
    RETURN purged;
END
$$
"""


def upgrade() -> None:
    for statement in as_maintenance_owner([PURGE_FUNCTION.format(floor=FLOOR)]):
        op.execute(statement)


def downgrade() -> None:
    # 0011's function, without the floor.
    for statement in as_maintenance_owner([PURGE_FUNCTION.format(floor="")]):
        op.execute(statement)

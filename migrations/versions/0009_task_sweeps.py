"""Task sweeps in one statement each: two SECURITY DEFINER functions owned by a maintenance role.

The reaper (tasks stranded in processing by a dead worker) and the reconciler (pending tasks
whose enqueue was lost) look at every tenant's tasks. They used to loop over the tenants with
two queries each, every 30 s. Now each sweep is one call:

- ``tenantry_reap_tasks(stale_before, max_attempts, per_tenant)`` returns stranded tasks to
  pending, or fails them when their attempts are spent, and returns the rows it changed;
- ``tenantry_stale_pending_tasks(cutoff, per_tenant)`` returns pending tasks created before
  ``cutoff``, to be enqueued again.

Each takes at most ``per_tenant`` tasks of each tenant, the oldest first, as the loop did: a
tenant with a large backlog does not crowd the others out of a sweep.

Why a role of their own. FORCE ROW LEVEL SECURITY holds the tables' owner too, so a
SECURITY DEFINER function owned by the migration owner would see no task at all; setting
``app.tenant_id`` per tenant inside the function would be the loop again, and BYPASSRLS would
open every table. So the functions run as ``tenantry_maintenance``: NOLOGIN (nobody connects
as it), a member of nothing, with no member that can act as it or inherit from it, owner of
these two functions only. Its
privileges: SELECT on ``tasks`` and UPDATE of the columns a sweep writes, SELECT of
``tenants.id``, and one policy, ``task_sweeps`` on ``tasks`` for it alone, that shows it the
unfinished tasks of every tenant (and lets a reaped task become failed). It has no right on any
other table, so whatever it might be made to run elsewhere reaches no tenant's row.

Who may run them: EXECUTE is revoked from PUBLIC and granted to ``tenantry_app`` only. The app
role stays held to the tenant policy everywhere; all these functions give it is what a sweep
does, on ``tasks`` only, with no table, column or SQL of the caller's choosing. They pin
``search_path`` and name their tables with their schema. The failure text of a reaped task is
fixed here (the domain's ``WORKER_LOST``) rather than a parameter, so no caller can write text of
its choosing into another tenant's task.

Ownership is handed to the role at the end. A superuser may do that outright; another owner
(one with CREATEROLE, say on a managed server) needs to be able to SET ROLE to the new owner,
which must be allowed to create in the schema: both are granted for this transaction and
revoked before it ends. Downgrade drops the functions, the policy and the grants; the role,
cluster-wide like ``tenantry_app``, stays, owning nothing here.

Revision ID: 0009_task_sweeps
Revises: 0008_tenant_keys
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

from tenantry.infrastructure.db.rls import (
    APP_ROLE,
    MAINTENANCE_ROLE,
    create_role,
    hand_over_to_maintenance,
)

# revision identifiers, used by Alembic.
revision: str = "0009_task_sweeps"
down_revision: str | Sequence[str] | None = "0008_tenant_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REAP = "tenantry_reap_tasks(timestamptz, integer, integer)"
STALE_PENDING = "tenantry_stale_pending_tasks(timestamptz, integer)"
POLICY = "task_sweeps"
# What a sweep writes when it reaps a task (see the UPDATE below).
SWEPT_COLUMNS = "status, error_message, result, output_files, completed_at, updated_at"

REAP_FUNCTION = """
CREATE FUNCTION tenantry_reap_tasks(stale_before timestamptz, max_attempts integer, per_tenant integer)
RETURNS SETOF public.tasks
LANGUAGE sql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH stranded AS (
        SELECT task.*
        FROM public.tenants AS tenant
        CROSS JOIN LATERAL (
            SELECT t.tenant_id, t.id, t.retry_count + 1 >= max_attempts AS spent
            FROM public.tasks AS t
            WHERE t.tenant_id = tenant.id
              AND t.status = 'processing'
              AND t.heartbeat_at < stale_before
            ORDER BY t.heartbeat_at
            LIMIT per_tenant
            -- A worker beating right now holds its row: alive, not stranded. Two reapers at
            -- once take different rows.
            FOR UPDATE SKIP LOCKED
        ) AS task
    )
    UPDATE public.tasks AS t SET
        status = CASE WHEN stranded.spent THEN 'failed' ELSE 'pending' END,
        error_message = CASE
            WHEN stranded.spent THEN 'The worker running this task stopped responding.'
            ELSE 'worker lost'
        END,
        result = CASE WHEN stranded.spent THEN NULL ELSE t.result END,
        output_files = CASE WHEN stranded.spent THEN '{}' ELSE t.output_files END,
        completed_at = CASE WHEN stranded.spent THEN now() ELSE t.completed_at END,
        updated_at = now()
    FROM stranded
    WHERE t.tenant_id = stranded.tenant_id AND t.id = stranded.id
    RETURNING t.*
$$
"""

STALE_PENDING_FUNCTION = """
CREATE FUNCTION tenantry_stale_pending_tasks(cutoff timestamptz, per_tenant integer)
RETURNS SETOF public.tasks
LANGUAGE sql STABLE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT task.*
    FROM public.tenants AS tenant
    CROSS JOIN LATERAL (
        SELECT * FROM public.tasks AS t
        WHERE t.tenant_id = tenant.id AND t.status = 'pending' AND t.created_at < cutoff
        ORDER BY t.created_at
        LIMIT per_tenant
    ) AS task
$$
"""


def upgrade() -> None:
    op.execute(
        create_role(
            MAINTENANCE_ROLE, "NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT"
        )
    )
    op.execute(f"GRANT USAGE ON SCHEMA public TO {MAINTENANCE_ROLE}")
    op.execute(f"GRANT SELECT (id) ON tenants TO {MAINTENANCE_ROLE}")
    op.execute(f"GRANT SELECT, UPDATE ({SWEPT_COLUMNS}) ON tasks TO {MAINTENANCE_ROLE}")
    # Reads unfinished tasks; a reaped one becomes pending or failed, and RETURNING reads it
    # back, so failed is visible too. Completed and cancelled tasks stay out of its sight.
    op.execute(
        f"CREATE POLICY {POLICY} ON tasks TO {MAINTENANCE_ROLE} "
        "USING (status IN ('pending', 'processing', 'failed')) "
        "WITH CHECK (status IN ('pending', 'failed'))"
    )
    for create, signature in ((REAP_FUNCTION, REAP), (STALE_PENDING_FUNCTION, STALE_PENDING)):
        op.execute(create)
        # Functions are executable by PUBLIC when created: revoked in the same transaction.
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO {APP_ROLE}")
    for statement in hand_over_to_maintenance((REAP, STALE_PENDING)):
        op.execute(statement)


def downgrade() -> None:
    for signature in (REAP, STALE_PENDING):
        op.execute(f"DROP FUNCTION {signature}")
    op.execute(f"DROP POLICY {POLICY} ON tasks")
    op.execute(f"REVOKE ALL ON tasks FROM {MAINTENANCE_ROLE}")
    op.execute(f"REVOKE ALL ON tenants FROM {MAINTENANCE_ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {MAINTENANCE_ROLE}")

"""The cross-tenant sweeps as one routed statement per tenant (docs/scaling.md).

The reaper's finding, the stale-task reconciler, the platform audit page and the webhook claim
and purge were each one SQL statement probing every tenant (a ``LATERAL`` join over ``tenants``, some
``FOR UPDATE SKIP LOCKED``). Citus cannot plan a parameterised SQL function, nor lock rows in
a statement that spans shards. Each becomes a PL/pgSQL loop over the tenants whose statements
name their tenant, so Citus routes each to the one worker holding it, and on a single
PostgreSQL each is the same index probe as before. What they return, lock and change is the
same; owners, grants and attributes stay (CREATE OR REPLACE).

The webhook claim keeps its order across tenants: the due deliveries of every tenant that no
other worker holds (at most ``per_endpoint`` of each endpoint) are locked first, as the single
statement did, then the ``batch`` due longest are leased, tenant by tenant.

The reaper changes tasks no more: ``tenantry_stranded_tasks`` (read only) finds them, and each
tenant's transaction takes its own back under its row level security, with the audit event of
a task failed so (application/tasks/maintenance.py). On Citus a transaction may not touch rows
another role changed in it; here none does, and each runs on one node. The maintenance role
loses UPDATE on tasks.

A change's webhook event is written with one routed INSERT per subscribed endpoint (an INSERT
... SELECT that makes ids goes through the Citus coordinator, by a COPY that row level security
refuses).

Downgrade keeps these forms: they answer as the statements they replace.

Revision ID: 0021_routed_sweeps
Revises: 0020_citus_forms
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

from tenantry.infrastructure.db.rls import (
    APP_ROLE,
    MAINTENANCE_ROLE,
    as_maintenance_owner,
    hand_over_to_maintenance,
)

# revision identifiers, used by Alembic.
revision: str = "0021_routed_sweeps"
down_revision: str | Sequence[str] | None = "0020_citus_forms"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_REAP = "tenantry_reap_tasks(timestamptz, integer, integer)"
STRANDED = "tenantry_stranded_tasks(timestamptz, integer)"
# For the downgrade: 0009_task_sweeps' reap, as a loop of one routed statement per tenant.
SWEPT_COLUMNS = "status, error_message, result, output_files, completed_at, updated_at"
OLD_REAP_FUNCTION = """
CREATE FUNCTION public.tenantry_reap_tasks(
    stale_before timestamptz, max_attempts integer, per_tenant integer
)
 RETURNS SETOF public.tasks
 LANGUAGE plpgsql
 STRICT SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    tenant uuid;
    at timestamptz := now();
BEGIN
    FOR tenant IN SELECT t.id FROM public.tenants AS t ORDER BY t.id LOOP
        RETURN QUERY
        WITH stranded AS (
            SELECT s.id, s.retry_count + 1 >= max_attempts AS spent
            FROM public.tasks AS s
            WHERE s.tenant_id = tenant AND s.status = 'processing'
              AND s.heartbeat_at < stale_before
            ORDER BY s.heartbeat_at
            LIMIT per_tenant
            FOR UPDATE SKIP LOCKED
        )
        UPDATE public.tasks AS t SET
            status = CASE WHEN stranded.spent THEN 'failed' ELSE 'pending' END,
            error_message = CASE
                WHEN stranded.spent THEN 'The worker running this task stopped responding.'
                ELSE 'worker lost'
            END,
            result = CASE WHEN stranded.spent THEN NULL ELSE t.result END,
            output_files = CASE WHEN stranded.spent THEN '{}' ELSE t.output_files END,
            completed_at = CASE WHEN stranded.spent THEN at ELSE t.completed_at END,
            updated_at = at
        FROM stranded
        WHERE t.tenant_id = tenant AND t.id = stranded.id
        RETURNING t.*;
    END LOOP;
END
$function$
"""
STRANDED_FUNCTION = """
CREATE FUNCTION public.tenantry_stranded_tasks(stale_before timestamptz, per_tenant integer)
 RETURNS TABLE(tenant_id uuid, id uuid)
 LANGUAGE plpgsql
 STABLE STRICT SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
#variable_conflict use_column
DECLARE
    tenant uuid;
BEGIN
    FOR tenant IN SELECT t.id FROM public.tenants AS t ORDER BY t.id LOOP
        RETURN QUERY
        SELECT s.tenant_id, s.id FROM public.tasks AS s
        WHERE s.tenant_id = tenant
          AND s.status = 'processing'
          AND s.heartbeat_at < stale_before
        ORDER BY s.heartbeat_at
        LIMIT per_tenant;
    END LOOP;
END
$function$
"""

STALE_PENDING = """
CREATE OR REPLACE FUNCTION public.tenantry_stale_pending_tasks(
    cutoff timestamptz, per_tenant integer
)
 RETURNS SETOF public.tasks
 LANGUAGE plpgsql
 STABLE STRICT SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    tenant uuid;
BEGIN
    FOR tenant IN SELECT t.id FROM public.tenants AS t ORDER BY t.id LOOP
        RETURN QUERY
        SELECT * FROM public.tasks AS t
        WHERE t.tenant_id = tenant AND t.status = 'pending' AND t.created_at < cutoff
        ORDER BY t.created_at
        LIMIT per_tenant;
    END LOOP;
END
$function$
"""

PLATFORM_AUDIT = """
CREATE OR REPLACE FUNCTION public.tenantry_platform_audit(
    before uuid, page_size integer, actor uuid, act text, target_kind text, target uuid,
    since timestamptz, until timestamptz
)
 RETURNS SETOF public.audit_events
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    tenant uuid;
    wanted integer := least(greatest(coalesce(page_size, 0), 0), 200);
    -- Keys, not rows: on Citus a row comes back typed as its shard.
    tenants uuid[] := '{}';
    ids uuid[] := '{}';
BEGIN
    -- Each tenant's newest matching events through its own indexes, then the newest of those.
    FOR tenant IN SELECT t.id FROM public.tenants AS t ORDER BY t.id LOOP
        SELECT tenants || coalesce(array_agg(o.tenant_id), '{}'),
               ids || coalesce(array_agg(o.id), '{}')
        INTO tenants, ids
        FROM (
            SELECT e.tenant_id, e.id FROM public.audit_events AS e
            WHERE e.tenant_id = tenant
              AND (before IS NULL OR e.id < before)
              AND (actor IS NULL OR e.actor_id = actor)
              AND (act IS NULL OR e.action = act)
              AND (target_kind IS NULL OR e.target_type = target_kind)
              AND (target IS NULL OR e.target_id = target)
              AND (since IS NULL OR e.created_at >= since)
              AND (until IS NULL OR e.created_at < until)
            ORDER BY e.id DESC
            LIMIT wanted
        ) AS o;
    END LOOP;
    SELECT coalesce(array_agg(u.tenant_id), '{}'), coalesce(array_agg(u.id), '{}')
    INTO tenants, ids
    FROM (
        SELECT k.tenant_id, k.id FROM unnest(tenants, ids) AS k(tenant_id, id)
        ORDER BY k.id DESC
        LIMIT wanted
    ) AS u;
    RETURN QUERY
    SELECT * FROM public.audit_events AS e
    WHERE e.tenant_id = ANY (tenants) AND e.id = ANY (ids)
    ORDER BY e.id DESC;
END
$function$
"""

CLAIM_WEBHOOK_DELIVERIES = """
CREATE OR REPLACE FUNCTION public.tenantry_claim_webhook_deliveries(
    lease_seconds integer, batch integer, per_endpoint integer
)
 RETURNS TABLE(tenant_id uuid, endpoint_id uuid, id uuid)
 LANGUAGE plpgsql
 STRICT SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
#variable_conflict use_column
DECLARE
    tenant uuid;
    -- Keys, not rows: on Citus a row comes back typed as its shard.
    tenants uuid[] := '{}';
    ids uuid[] := '{}';
    dues timestamptz[] := '{}';
    chosen uuid[];
BEGIN
    FOR tenant IN SELECT t.id FROM public.tenants AS t ORDER BY t.id LOOP
        SELECT tenants || coalesce(array_agg(o.tenant_id), '{}'),
               ids || coalesce(array_agg(o.id), '{}'),
               dues || coalesce(array_agg(o.next_attempt_at), '{}')
        INTO tenants, ids, dues
        FROM public.webhook_endpoints AS e
        CROSS JOIN LATERAL (
            SELECT d.tenant_id, d.id, d.next_attempt_at FROM public.webhook_deliveries AS d
            WHERE d.tenant_id = tenant AND d.endpoint_id = e.id
              AND d.status = 'pending' AND d.next_attempt_at <= now()
            ORDER BY d.next_attempt_at
            LIMIT per_endpoint
            -- Two workers at once read different deliveries.
            FOR UPDATE SKIP LOCKED
        ) AS o
        WHERE e.tenant_id = tenant AND e.active;
    END LOOP;
    FOR tenant, chosen IN
        SELECT c.tenant_id, array_agg(c.id)
        FROM (
            SELECT k.tenant_id, k.id FROM unnest(tenants, ids, dues) AS k(tenant_id, id, due)
            ORDER BY k.due
            LIMIT batch
        ) AS c
        GROUP BY c.tenant_id
    LOOP
        RETURN QUERY
        UPDATE public.webhook_deliveries AS w SET
            next_attempt_at = now() + make_interval(secs => lease_seconds),
            attempts = w.attempts + 1
        WHERE w.tenant_id = tenant AND w.id = ANY (chosen)
        RETURNING w.tenant_id, w.endpoint_id, w.id;
    END LOOP;
END
$function$
"""

PURGE_WEBHOOK_DELIVERIES = """
CREATE OR REPLACE FUNCTION public.tenantry_purge_webhook_deliveries(
    before timestamptz, batch integer
)
 RETURNS integer
 LANGUAGE plpgsql
 STRICT SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    tenant uuid;
    purged integer;
    total integer := 0;
BEGIN
    FOR tenant IN SELECT t.id FROM public.tenants AS t ORDER BY t.id LOOP
        WITH aged AS (
            SELECT o.id
            FROM public.webhook_endpoints AS e
            CROSS JOIN LATERAL (
                SELECT d.id FROM public.webhook_deliveries AS d
                WHERE d.tenant_id = tenant AND d.endpoint_id = e.id AND d.created_at < before
                  AND d.status <> 'pending'
                ORDER BY d.created_at
                LIMIT batch
            ) AS o
            WHERE e.tenant_id = tenant
        ), gone AS (
            DELETE FROM public.webhook_deliveries AS w
            USING aged
            WHERE w.tenant_id = tenant AND w.id = aged.id
            RETURNING 1
        )
        SELECT count(*)::integer INTO purged FROM gone;
        total := total + purged;
    END LOOP;
    RETURN total;
END
$function$
"""


PUBLISH_WEBHOOK_EVENT = """
CREATE OR REPLACE FUNCTION public.tenantry_publish_webhook_event(
    tenant uuid, event uuid, kind text, body jsonb
)
 RETURNS void
 LANGUAGE plpgsql
 STRICT
AS $function$
DECLARE
    endpoint uuid;
BEGIN
    -- One INSERT ... VALUES per subscribed endpoint: Citus routes it to the tenant's shard,
    -- where an INSERT ... SELECT making ids would go through the coordinator, by a COPY that
    -- row level security refuses.
    FOR endpoint IN
        SELECT e.id FROM public.webhook_endpoints AS e
        WHERE e.tenant_id = tenant AND e.active AND kind = ANY (e.events)
    LOOP
        INSERT INTO public.webhook_deliveries (
            tenant_id, id, endpoint_id, event_id, event_type, payload, status, attempts,
            next_attempt_at, tries_since, log, created_at, updated_at
        )
        VALUES (
            tenant, pg_catalog.gen_random_uuid(), endpoint, event, kind, body, 'pending', 0,
            pg_catalog.now(), pg_catalog.now(), '[]'::jsonb, pg_catalog.now(), pg_catalog.now()
        );
    END LOOP;
END
$function$
"""


def upgrade() -> None:
    op.execute(PUBLISH_WEBHOOK_EVENT)
    for statement in as_maintenance_owner(
        [STALE_PENDING, PLATFORM_AUDIT, CLAIM_WEBHOOK_DELIVERIES, PURGE_WEBHOOK_DELIVERIES]
    ):
        op.execute(statement)
    # The reap's change is the tenant's own now: the maintenance role only finds the tasks.
    op.execute(f"DROP FUNCTION {OLD_REAP}")
    op.execute(STRANDED_FUNCTION)
    op.execute(f"REVOKE ALL ON FUNCTION {STRANDED} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {STRANDED} TO {APP_ROLE}")
    for statement in hand_over_to_maintenance([STRANDED]):
        op.execute(statement)
    op.execute(f"REVOKE UPDATE ON tasks FROM {MAINTENANCE_ROLE}")


def downgrade() -> None:
    """The loop forms of the other sweeps stay: they answer as the statements they replaced."""
    op.execute(f"GRANT UPDATE ({SWEPT_COLUMNS}) ON tasks TO {MAINTENANCE_ROLE}")
    op.execute(f"DROP FUNCTION {STRANDED}")
    op.execute(OLD_REAP_FUNCTION)
    op.execute(f"REVOKE ALL ON FUNCTION {OLD_REAP} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {OLD_REAP} TO {APP_ROLE}")
    for statement in hand_over_to_maintenance([OLD_REAP]):
        op.execute(statement)

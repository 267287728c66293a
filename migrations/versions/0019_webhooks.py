"""Webhooks: tenants' endpoints, the deliveries of their events (the outbox), and the workers'
claim and purge across tenants.

- ``webhook_endpoints``: tenant-owned (key ``(tenant_id, id)``, the tenant policy, forced). The
  signing secret is a column the app reads for the worker and shows nobody after creation (the
  tenant export leaves it out).
- ``webhook_deliveries``: one row per event and subscribed endpoint, written by the change's
  own transaction; its ``log`` holds each attempt. Indexes lead with ``tenant_id``: an
  endpoint's log newest first, and its due deliveries (partial, pending only).
- ``tenantry_claim_webhook_deliveries(lease_seconds, batch, per_endpoint)``: leases up to
  ``batch`` due deliveries of active endpoints, at most ``per_endpoint`` of each (an endpoint
  with a backlog does not crowd out the others), and returns their keys. The lease is the
  delivery's next attempt time moved on: a worker killed mid-delivery leaves a delivery that
  is due again when its lease ends. ``FOR UPDATE SKIP LOCKED``: two workers never claim the
  same one.
- ``tenantry_purge_webhook_deliveries(before, batch)``: deletes up to ``batch`` finished
  deliveries of each endpoint created before ``before``; how many.
- ``tenantry_publish_webhook_event(tenant, event_id, event_type, payload)``: the outbox's write,
  run by the app role as itself (SECURITY INVOKER, under the tenant policy) with the COMMIT of
  the change: one delivery per active endpoint of the tenant subscribed to the event. A
  function so that its plan is made once per connection, not at every change.

Both are owned by the maintenance role, executable by the app role only (as the task sweeps
of 0009_task_sweeps). The maintenance role reads ``(tenant_id, id, active)`` of endpoints and
the deliveries, updates only a delivery's ``next_attempt_at`` and ``attempts``, and deletes
deliveries; its policies on the two tables are for it alone.

Revision ID: 0019_webhooks
Revises: 0018_platform_audit
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from tenantry.infrastructure.db.rls import (
    APP_ROLE,
    MAINTENANCE_ROLE,
    enable_tenant_rls,
    grant_to_app,
    hand_over_to_maintenance,
)

# revision identifiers, used by Alembic.
revision: str = "0019_webhooks"
down_revision: str | Sequence[str] | None = "0018_platform_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLAIM = "tenantry_claim_webhook_deliveries(integer, integer, integer)"
PURGE = "tenantry_purge_webhook_deliveries(timestamptz, integer)"
PUBLISH = "tenantry_publish_webhook_event(uuid, uuid, text, jsonb)"
POLICY = "webhook_dispatch"

CLAIM_FUNCTION = """
CREATE FUNCTION tenantry_claim_webhook_deliveries(
    lease_seconds integer, batch integer, per_endpoint integer
)
RETURNS TABLE (tenant_id uuid, endpoint_id uuid, id uuid)
LANGUAGE sql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH due AS (
        SELECT d.tenant_id, d.id
        FROM public.webhook_endpoints AS e
        CROSS JOIN LATERAL (
            SELECT o.tenant_id, o.id, o.next_attempt_at
            FROM public.webhook_deliveries AS o
            WHERE o.tenant_id = e.tenant_id AND o.endpoint_id = e.id
              AND o.status = 'pending' AND o.next_attempt_at <= now()
            ORDER BY o.next_attempt_at
            LIMIT per_endpoint
            FOR UPDATE SKIP LOCKED
        ) AS d
        WHERE e.active
        ORDER BY d.next_attempt_at
        LIMIT batch
    )
    UPDATE public.webhook_deliveries AS w SET
        next_attempt_at = now() + make_interval(secs => lease_seconds),
        attempts = w.attempts + 1
    FROM due
    WHERE w.tenant_id = due.tenant_id AND w.id = due.id
    RETURNING w.tenant_id, w.endpoint_id, w.id
$$
"""

PURGE_FUNCTION = """
CREATE FUNCTION tenantry_purge_webhook_deliveries(before timestamptz, batch integer)
RETURNS integer
LANGUAGE sql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH aged AS (
        SELECT o.tenant_id, o.id
        FROM public.webhook_endpoints AS e
        CROSS JOIN LATERAL (
            SELECT d.tenant_id, d.id FROM public.webhook_deliveries AS d
            WHERE d.tenant_id = e.tenant_id AND d.endpoint_id = e.id AND d.created_at < before
              AND d.status <> 'pending'
            ORDER BY d.created_at
            LIMIT batch
        ) AS o
    ), gone AS (
        DELETE FROM public.webhook_deliveries AS w
        USING aged
        WHERE w.tenant_id = aged.tenant_id AND w.id = aged.id
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$
"""


PUBLISH_FUNCTION = """
CREATE FUNCTION tenantry_publish_webhook_event(
    tenant uuid, event uuid, kind text, body jsonb
)
RETURNS void
LANGUAGE plpgsql VOLATILE STRICT SECURITY INVOKER
AS $$
BEGIN
    INSERT INTO public.webhook_deliveries (
        tenant_id, id, endpoint_id, event_id, event_type, payload, status, attempts,
        next_attempt_at, tries_since, log, created_at, updated_at
    )
    SELECT e.tenant_id, pg_catalog.gen_random_uuid(), e.id, event, kind, body, 'pending', 0,
        pg_catalog.now(), pg_catalog.now(), '[]'::jsonb, pg_catalog.now(), pg_catalog.now()
    FROM public.webhook_endpoints AS e
    WHERE e.tenant_id = tenant AND e.active AND kind = ANY (e.events);
END
$$
"""


def _tenant_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
    ]


def _row_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        *_tenant_columns(),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("events", postgresql.ARRAY(sa.String(length=50)), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("secret", sa.String(length=100), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        *_row_columns(),
        sa.ForeignKeyConstraint(
            ["tenant_id", "created_by"],
            ["users.tenant_id", "users.id"],
            name=op.f("fk_webhook_endpoints_tenant_id_users"),
            ondelete="SET NULL (created_by)",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_webhook_endpoints_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_table(
        "webhook_deliveries",
        *_tenant_columns(),
        sa.Column("endpoint_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(length=50), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tries_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "log",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        *_row_columns(),
        sa.ForeignKeyConstraint(
            ["tenant_id", "endpoint_id"],
            ["webhook_endpoints.tenant_id", "webhook_endpoints.id"],
            name=op.f("fk_webhook_deliveries_tenant_id_webhook_endpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_webhook_deliveries_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["tenant_id", "endpoint_id", "next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_webhook_deliveries_tenant_endpoint",
        "webhook_deliveries",
        ["tenant_id", "endpoint_id", "created_at"],
    )
    for table in ("webhook_endpoints", "webhook_deliveries"):
        op.execute(grant_to_app(table))
        for statement in enable_tenant_rls(table):
            op.execute(statement)
    op.execute(f"GRANT SELECT (tenant_id, id, active) ON webhook_endpoints TO {MAINTENANCE_ROLE}")
    op.execute(
        f"GRANT SELECT, DELETE, UPDATE (next_attempt_at, attempts) ON webhook_deliveries "
        f"TO {MAINTENANCE_ROLE}"
    )
    # It reads every tenant's endpoints; it reads, leases and purges every tenant's
    # deliveries, and a lease leaves a delivery pending.
    op.execute(
        f"CREATE POLICY {POLICY} ON webhook_endpoints FOR SELECT TO {MAINTENANCE_ROLE} USING (true)"
    )
    op.execute(
        f"CREATE POLICY {POLICY} ON webhook_deliveries TO {MAINTENANCE_ROLE} "
        "USING (true) WITH CHECK (status = 'pending')"
    )
    for create, signature in ((CLAIM_FUNCTION, CLAIM), (PURGE_FUNCTION, PURGE)):
        op.execute(create)
        # Functions are executable by PUBLIC when created: revoked in the same transaction.
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO {APP_ROLE}")
    for statement in hand_over_to_maintenance((CLAIM, PURGE)):
        op.execute(statement)
    op.execute(PUBLISH_FUNCTION)
    op.execute(f"REVOKE ALL ON FUNCTION {PUBLISH} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {PUBLISH} TO {APP_ROLE}")


def downgrade() -> None:
    for signature in (CLAIM, PURGE, PUBLISH):
        op.execute(f"DROP FUNCTION {signature}")
    # The indexes, policies and grants go with the tables.
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")

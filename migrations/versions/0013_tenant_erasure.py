"""Tenant erasure: the platform's erasure log, and the one way the app removes rows it may not
delete itself.

- ``tenant_erasures``: platform data, no tenant's. Its tenant column is ``erased_tenant_id``,
  not ``tenant_id`` (the catalog takes every table with a ``tenant_id`` for a tenant table, and
  an erasure empties those), and has no foreign key: the entry outlives its tenant. No row level
  security. The app role may read, add and update entries (state, counts), never delete one.
  A partial unique index keeps one unfinished erasure per tenant.
- ``erase_tenant_rows(target, tenant, batch)`` deletes at most ``batch`` of one tenant's rows
  of ``target`` and returns how many: for the tenant tables the app role holds no DELETE on
  (``audit_events``, append-only). It refuses (SQLSTATE 42501) unless the tenant has an
  unfinished erasure in the log and is not active, so the app cannot use it on the trail of a
  live tenant without first suspending it and logging an erasure, both of which stay visible.
  SECURITY DEFINER, owned by the maintenance role like ``purge_audit_events``, executable by
  the app role only; it reaches only the tables the maintenance role may delete from (only
  ``audit_events``), under the tenant policy for the tenant it was given (set for the delete,
  and the caller's value set back, as the purge does).

Revision ID: 0013_tenant_erasure
Revises: 0012_audit_purge_floor
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from tenantry.infrastructure.db.rls import APP_ROLE, MAINTENANCE_ROLE, hand_over_to_maintenance

# revision identifiers, used by Alembic.
revision: str = "0013_tenant_erasure"
down_revision: str | Sequence[str] | None = "0012_audit_purge_floor"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ERASE = "erase_tenant_rows(regclass, uuid, integer)"

ERASE_FUNCTION = """
CREATE FUNCTION erase_tenant_rows(target regclass, tenant uuid, batch integer)
RETURNS integer
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    callers text := coalesce(current_setting('app.tenant_id', true), '');
    erased integer;
BEGIN
    IF NOT EXISTS (
        SELECT FROM public.tenant_erasures AS e
        WHERE e.erased_tenant_id = tenant AND e.state <> 'finished'
    ) OR EXISTS (
        SELECT FROM public.tenants AS t WHERE t.id = tenant AND t.status = 'active'
    ) THEN
        RAISE EXCEPTION 'erase_tenant_rows: tenant % has no erasure under way', tenant
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- The tenant policy shows the given tenant's rows only.
    PERFORM set_config('app.tenant_id', tenant::text, true);
    -- regclass prints schema-qualified and quoted under this search_path.
    EXECUTE format(
        'DELETE FROM %s AS r WHERE r.tenant_id = $1 AND r.ctid = ANY (ARRAY('
        'SELECT o.ctid FROM %s AS o WHERE o.tenant_id = $1 LIMIT $2))',
        target, target
    ) USING tenant, batch;
    GET DIAGNOSTICS erased = ROW_COUNT;
    PERFORM set_config('app.tenant_id', callers, true);
    RETURN erased;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "tenant_erasures",
        sa.Column("erased_tenant_id", sa.Uuid(), nullable=False),
        sa.Column("slug", sa.String(length=63), nullable=False),
        sa.Column("requested_by", sa.Uuid(), nullable=True),
        sa.Column("requested_by_type", sa.String(length=20), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rows_removed", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("objects_removed", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "removed",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenant_erasures")),
    )
    op.create_index(
        "ux_tenant_erasures_unfinished",
        "tenant_erasures",
        ["erased_tenant_id"],
        unique=True,
        postgresql_where=sa.text("state <> 'finished'"),
    )
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON tenant_erasures TO {APP_ROLE}")

    op.execute(f"GRANT SELECT (erased_tenant_id, state) ON tenant_erasures TO {MAINTENANCE_ROLE}")
    op.execute(f"GRANT SELECT (status) ON tenants TO {MAINTENANCE_ROLE}")
    op.execute(ERASE_FUNCTION)
    # Functions are executable by PUBLIC when created: revoked in the same transaction.
    op.execute(f"REVOKE ALL ON FUNCTION {ERASE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {ERASE} TO {APP_ROLE}")
    for statement in hand_over_to_maintenance([ERASE]):
        op.execute(statement)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {ERASE}")
    op.execute(f"REVOKE SELECT (status) ON tenants FROM {MAINTENANCE_ROLE}")  # noqa: S608 - constant identifiers, no input
    # The index and the grants go with the table.
    op.drop_table("tenant_erasures")

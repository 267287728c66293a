"""The audit trail: one row per change in a tenant, appended by the app, never changed by it.

- ``audit_events``: tenant-owned like every tenant table (key ``(tenant_id, id)``, the tenant
  policy, forced). No foreign key on the actor or the target: an event outlives the user, key
  or row it names. Pages are newest first by id (UUIDv7, time ordered), which the primary key
  serves; the filters (action, target, actor) have an index each ending in id, and the
  retention purge one on ``(tenant_id, created_at)``.
- The app role gets SELECT and INSERT only: an UPDATE or DELETE of the app is refused by
  privilege, whatever the policy says.
- ``purge_audit_events(tenant, before, batch)`` deletes at most ``batch`` of one tenant's events
  created before ``before`` and returns how many. It is SECURITY DEFINER, owned by the
  maintenance role (as the task sweeps of 0009_task_sweeps are), executable by the app role
  only. The maintenance role has SELECT and DELETE on the table and no policy of its own: the
  function sets ``app.tenant_id`` to the tenant it was given, so the tenant policy shows it
  that tenant's rows and no other's, and sets the caller's value back before it returns: the
  caller's transaction stays bound to its own tenant (an error aborts the transaction or its
  savepoint, which undoes the setting too). A ``SET app.tenant_id`` clause on the function would
  do that by itself, but only a superuser may create a function setting a custom parameter.

Revision ID: 0011_audit_events
Revises: 0010_file_usage
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
    grant_append_only_to_app,
    hand_over_to_maintenance,
)

# revision identifiers, used by Alembic.
revision: str = "0011_audit_events"
down_revision: str | Sequence[str] | None = "0010_file_usage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PURGE = "purge_audit_events(uuid, timestamptz, integer)"

PURGE_FUNCTION = """
CREATE FUNCTION purge_audit_events(tenant uuid, before timestamptz, batch integer)
RETURNS integer
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    callers text := coalesce(current_setting('app.tenant_id', true), '');
    purged integer;
BEGIN
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
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("actor_type", sa.String(length=20), nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("api_key_id", sa.Uuid(), nullable=True),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("target_type", sa.String(length=50), nullable=False),
        sa.Column("target_id", sa.Uuid(), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("client", sa.String(length=255), nullable=True),
        sa.Column(
            "changes",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_audit_events_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_audit_events")),
    )
    for name, columns in (
        ("ix_audit_events_tenant_action", ["tenant_id", "action", "id"]),
        ("ix_audit_events_tenant_target", ["tenant_id", "target_type", "target_id", "id"]),
        ("ix_audit_events_tenant_actor", ["tenant_id", "actor_id", "id"]),
        ("ix_audit_events_tenant_created", ["tenant_id", "created_at"]),
    ):
        op.create_index(name, "audit_events", columns)
    op.execute(grant_append_only_to_app("audit_events"))
    for statement in enable_tenant_rls("audit_events"):
        op.execute(statement)

    op.execute(f"GRANT SELECT, DELETE ON audit_events TO {MAINTENANCE_ROLE}")
    op.execute(PURGE_FUNCTION)
    # Functions are executable by PUBLIC when created: revoked in the same transaction.
    op.execute(f"REVOKE ALL ON FUNCTION {PURGE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {PURGE} TO {APP_ROLE}")
    for statement in hand_over_to_maintenance([PURGE]):
        op.execute(statement)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {PURGE}")
    op.execute(f"REVOKE ALL ON audit_events FROM {MAINTENANCE_ROLE}")
    # The indexes, the policy and the grants go with the table.
    op.drop_table("audit_events")

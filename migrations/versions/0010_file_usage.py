"""Per-tenant file usage counters and upload reservations: the quota taken by one statement.

Uploads used to sum the tenant's files twice and hold the tenant's row lock for the sum and the
commit, so a tenant's uploads ran one at a time, each slower as its files grew. Now:

- ``file_usage``: one row per tenant (``id`` is the tenant's id): the bytes and count of its live
  files, and the bytes held by uploads in progress (``reserved_bytes``). An upload holds bytes
  with one conditional UPDATE (``used + reserved + n <= quota``), which reads the latest row
  under its own row lock, so concurrent uploads never hold more than the quota between them.
- ``file_reservations``: what each upload in progress holds, keyed by its file id, with an
  expiry. An upload that fails gives its bytes back; one whose process died (kill -9) leaves
  its row behind, and the bytes of expired rows are given back by the tenant's next upload that
  would otherwise be refused, and by the periodic file sweep.

The counters are filled from the files already there, tenant by tenant: ``app.tenant_id`` is set
for each, so the backfill reads the files and writes the counters under the tenant policy
whether or not the migration's role bypasses row level security.

Revision ID: 0010_file_usage
Revises: 0009_task_sweeps
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tenantry.infrastructure.db.rls import enable_tenant_rls, grant_to_app

# revision identifiers, used by Alembic.
revision: str = "0010_file_usage"
down_revision: str | Sequence[str] | None = "0009_task_sweeps"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKFILL = """
DO $$
DECLARE
    tenant uuid;
BEGIN
    FOR tenant IN SELECT id FROM tenants LOOP
        PERFORM set_config('app.tenant_id', tenant::text, true);
        INSERT INTO file_usage (tenant_id, id, used_bytes, file_count, reserved_bytes,
                                created_at, updated_at)
        SELECT tenant, tenant, coalesce(sum(size), 0), count(*), 0, now(), now()
        FROM files WHERE tenant_id = tenant AND deleted_at IS NULL;
    END LOOP;
    PERFORM set_config('app.tenant_id', '', true);
END
$$
"""


def _tenant_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    for table, columns, checks in (
        (
            "file_usage",
            [
                sa.Column("used_bytes", sa.BigInteger(), server_default="0", nullable=False),
                sa.Column("file_count", sa.BigInteger(), server_default="0", nullable=False),
                sa.Column("reserved_bytes", sa.BigInteger(), server_default="0", nullable=False),
            ],
            [
                sa.CheckConstraint(
                    "used_bytes >= 0 AND file_count >= 0 AND reserved_bytes >= 0",
                    name=op.f("ck_file_usage_not_negative"),
                )
            ],
        ),
        (
            "file_reservations",
            [
                sa.Column("bytes", sa.BigInteger(), nullable=False),
                sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
            ],
            [sa.CheckConstraint("bytes >= 0", name=op.f("ck_file_reservations_not_negative"))],
        ),
    ):
        op.create_table(
            table,
            *_tenant_columns(),
            *columns,
            *checks,
            sa.ForeignKeyConstraint(
                ["tenant_id"],
                ["tenants.id"],
                name=op.f(f"fk_{table}_tenant_id_tenants"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f(f"pk_{table}")),
        )
        op.execute(grant_to_app(table))
        for statement in enable_tenant_rls(table):
            op.execute(statement)
    op.create_index(
        "ix_file_reservations_tenant_expires", "file_reservations", ["tenant_id", "expires_at"]
    )
    op.execute(BACKFILL)


def downgrade() -> None:
    op.drop_index("ix_file_reservations_tenant_expires", table_name="file_reservations")
    op.drop_table("file_reservations")
    op.drop_table("file_usage")

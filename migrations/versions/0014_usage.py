"""Usage metering: what each tenant used, per UTC day.

- ``usage_daily``: one row per tenant and day (unique), the day's counters (requests by class,
  bytes uploaded and downloaded) and its distinct active users.
- ``usage_task_daily``: one row per tenant, day and task type: attempts that ended, and the
  milliseconds their handlers ran.
- ``usage_flushes``: the ids of the buffer's flushes already folded into those rows, so that a
  flush folded twice (a worker killed between the commit and forgetting it) adds once. Its
  ids are UUIDv7: the key's range scan removes those older than a week.

All three are tenant tables like every other: key ``(tenant_id, id)``, the tenant policy,
forced; the app role may read and change them.

Revision ID: 0014_usage
Revises: 0013_tenant_erasure
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tenantry.infrastructure.db.rls import enable_tenant_rls, grant_to_app

# revision identifiers, used by Alembic.
revision: str = "0014_usage"
down_revision: str | Sequence[str] | None = "0013_tenant_erasure"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def count(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), server_default="0", nullable=False)


def tenant_table(name: str, *columns: sa.Column[object], unique: Sequence[str] = ()) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        *columns,
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f(f"fk_{name}_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f(f"pk_{name}")),
        *([sa.UniqueConstraint(*unique, name=f"uq_{name}_tenant_day")] if unique else []),
    )
    op.execute(grant_to_app(name))
    for statement in enable_tenant_rls(name):
        op.execute(statement)


def upgrade() -> None:
    tenant_table(
        "usage_daily",
        sa.Column("day", sa.Date(), nullable=False),
        count("requests_read"),
        count("requests_write"),
        count("requests_upload"),
        count("requests_task"),
        count("bytes_uploaded"),
        count("bytes_downloaded"),
        sa.Column("active_users", sa.Integer(), server_default="0", nullable=False),
        unique=("tenant_id", "day"),
    )
    tenant_table(
        "usage_task_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("task_type", sa.String(length=100), nullable=False),
        count("runs"),
        count("ms"),
        unique=("tenant_id", "day", "task_type"),
    )
    tenant_table("usage_flushes")


def downgrade() -> None:
    # The policies and grants go with the tables.
    for name in ("usage_flushes", "usage_task_daily", "usage_daily"):
        op.drop_table(name)

"""Usage days record the bytes a tenant stores: the highest seen that day and the last.

Both are read from ``file_usage`` (0010_file_usage) each time the worker folds the tenant's
counts into its day, so a day's peak is the highest of those readings.

Revision ID: 0016_usage_stored
Revises: 0015_tenant_removal
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0016_usage_stored"
down_revision: str | Sequence[str] | None = "0015_tenant_removal"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("bytes_stored_peak", "bytes_stored_end")


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column(
            "usage_daily", sa.Column(name, sa.BigInteger(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    for name in COLUMNS:
        op.drop_column("usage_daily", name)

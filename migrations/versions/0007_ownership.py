"""Ownership: files record their uploader, documents their author, tasks their submitter.

Each creator column points at a user through (tenant_id, created_by), so a row can never name
another tenant's user. Deleting a user sets only the creator column to NULL (tenant_id is part
of the key and stays): the user's rows remain, manageable by admins and owners only. Existing
files and documents get no creator; a task submitter whose user is already gone becomes NULL
too, as the foreign key would refuse it.

Revision ID: 0007_ownership
Revises: 0006_tasks
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007_ownership"
down_revision: str | Sequence[str] | None = "0006_tasks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_COLUMNS = ("files", "documents")
OWNED = ("files", "documents", "tasks")


def upgrade() -> None:
    for table in NEW_COLUMNS:
        op.add_column(table, sa.Column("created_by", sa.Uuid(), nullable=True))
    op.execute(
        """
        UPDATE tasks SET created_by = NULL
        WHERE created_by IS NOT NULL
          AND NOT EXISTS (
              SELECT 1 FROM users
              WHERE users.tenant_id = tasks.tenant_id AND users.id = tasks.created_by
          )
        """
    )
    for table in OWNED:
        op.create_foreign_key(
            op.f(f"fk_{table}_tenant_id_users"),
            table,
            "users",
            ["tenant_id", "created_by"],
            ["tenant_id", "id"],
            ondelete="SET NULL (created_by)",
        )


def downgrade() -> None:
    for table in OWNED:
        op.drop_constraint(op.f(f"fk_{table}_tenant_id_users"), table, type_="foreignkey")
    for table in NEW_COLUMNS:
        op.drop_column(table, "created_by")

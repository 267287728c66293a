"""Forms a Citus cluster accepts, on a single PostgreSQL as well (docs/scaling.md).

- The keys from what a user made to its maker (``projects.owner_id``; ``created_by`` of
  documents, files, tasks and webhook endpoints) were ``ON DELETE SET NULL (column)``, which
  Citus refuses on distributed tables. They become plain keys; deleting a user clears those
  columns first, in the same transaction (infrastructure/db/users.py, ``MADE_BY``).
- The functions that switch tenant for a moment (the erasure's, the audit purge's, the file
  usage's) set it with ``SET LOCAL``, as the app does: on Citus, ``set_config`` stays on the
  coordinator, and the shards' policies see no tenant. Their bodies are read from the catalog
  and only that statement changes.

Revision ID: 0020_citus_forms
Revises: 0019_webhooks
Create Date: 2026-12-05
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tenantry.infrastructure.db.rls import as_maintenance_owner

# revision identifiers, used by Alembic.
revision: str = "0020_citus_forms"
down_revision: str | Sequence[str] | None = "0019_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MADE_BY = {
    "projects": "owner_id",
    "documents": "created_by",
    "files": "created_by",
    "tasks": "created_by",
    "webhook_endpoints": "created_by",
}
SET_CONFIG = re.compile(r"PERFORM set_config\('app\.tenant_id', (.+?), true\);")
SET_LOCAL = re.compile(r"EXECUTE format\('SET LOCAL app\.tenant_id = %L', (.+?)\);")
SWITCHING = sa.text(
    "select pg_get_functiondef(p.oid) from pg_proc p "
    "where p.pronamespace = current_schema()::regnamespace and p.prosrc like :marker "
    "order by p.proname"
)


def _key(table: str) -> str:
    return f"fk_{table}_tenant_id_users"


def _rewrite(marker: str, pattern: re.Pattern[str], replacement: str) -> None:
    definitions = op.get_bind().execute(SWITCHING, {"marker": f"%{marker}%"}).scalars().all()
    rewritten = [pattern.sub(replacement, definition) for definition in definitions]
    for statement in as_maintenance_owner(rewritten):
        op.execute(statement)


def upgrade() -> None:
    for table, column in MADE_BY.items():
        op.drop_constraint(_key(table), table, type_="foreignkey")
        op.create_foreign_key(
            _key(table), table, "users", ["tenant_id", column], ["tenant_id", "id"]
        )
    _rewrite(
        "set_config('app.tenant_id'",
        SET_CONFIG,
        r"EXECUTE format('SET LOCAL app.tenant_id = %L', \1);",
    )


def downgrade() -> None:
    _rewrite(
        "SET LOCAL app.tenant_id", SET_LOCAL, r"PERFORM set_config('app.tenant_id', \1, true);"
    )
    for table, column in MADE_BY.items():
        op.drop_constraint(_key(table), table, type_="foreignkey")
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {_key(table)} FOREIGN KEY (tenant_id, {column}) "
            f"REFERENCES users (tenant_id, id) ON DELETE SET NULL ({column})"
        )

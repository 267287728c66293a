"""Tenant keys: every tenant table is keyed by (tenant_id, id), ready to be distributed by tenant.

Citus wants the distribution column in every primary key, unique key and foreign key. The
references between tenant tables already carried tenant_id, but pointed at extra UNIQUE
(tenant_id, id) constraints beside primary keys on id alone. Those constraints become the
primary keys: each reference is dropped, the keys are swapped, and the reference is made again,
the same columns now pointing at the primary key. No row is rewritten; each table gets its new
key's index built and each reference is checked again, under locks, while this runs.

The downgrade puts id alone back as the key. It fails (on pk_<table>) if two tenants have come
to hold the same id meanwhile: ids are UUIDv7 made by the app, so only rows copied between
tenants by hand would.

Revision ID: 0008_tenant_keys
Revises: 0007_ownership
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0008_tenant_keys"
down_revision: str | Sequence[str] | None = "0007_ownership"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TENANT_TABLES = (
    "users",
    "refresh_tokens",
    "api_keys",
    "projects",
    "documents",
    "files",
    "tasks",
    "task_logs",
)
# The tables other tenant tables reference, each through its UNIQUE (tenant_id, id) until now.
REFERENCED = ("users", "projects", "tasks")
# (table, its column naming the other row, the table referenced, ON DELETE)
REFERENCES = (
    ("refresh_tokens", "user_id", "users", "CASCADE"),
    ("api_keys", "user_id", "users", "CASCADE"),
    ("projects", "owner_id", "users", "SET NULL (owner_id)"),
    ("documents", "project_id", "projects", "CASCADE"),
    ("documents", "created_by", "users", "SET NULL (created_by)"),
    ("files", "created_by", "users", "SET NULL (created_by)"),
    ("tasks", "created_by", "users", "SET NULL (created_by)"),
    ("task_logs", "task_id", "tasks", "CASCADE"),
)


def upgrade() -> None:
    drop_references()
    for table in REFERENCED:
        op.drop_constraint(f"uq_{table}_tenant_id_id", table, type_="unique")
    for table in TENANT_TABLES:
        set_primary_key(table, "tenant_id, id")
    create_references()


def downgrade() -> None:
    drop_references()
    for table in TENANT_TABLES:
        set_primary_key(table, "id")
    for table in REFERENCED:
        op.create_unique_constraint(f"uq_{table}_tenant_id_id", table, ["tenant_id", "id"])
    create_references()


def set_primary_key(table: str, columns: str) -> None:
    # One statement: the table is never without a key, and is locked once.
    op.execute(
        f"ALTER TABLE {table} DROP CONSTRAINT pk_{table}, "
        f"ADD CONSTRAINT pk_{table} PRIMARY KEY ({columns})"
    )


def drop_references() -> None:
    # A reference depends on the unique index it points at: it goes before the index does.
    for table, _, referred, _ in REFERENCES:
        op.drop_constraint(op.f(f"fk_{table}_tenant_id_{referred}"), table, type_="foreignkey")


def create_references() -> None:
    for table, column, referred, ondelete in REFERENCES:
        op.create_foreign_key(
            op.f(f"fk_{table}_tenant_id_{referred}"),
            table,
            referred,
            ["tenant_id", column],
            ["tenant_id", "id"],
            ondelete=ondelete,
        )

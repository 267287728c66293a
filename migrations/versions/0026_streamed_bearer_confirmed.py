"""A streamed request's bearer check confirmed by its first transaction.

A request whose body is streamed (an upload) was authenticated by ``tenantry_active_roles``
(``0022_active_roles``), a statement alone, before its body: a round trip and a pooled
connection of its own for every upload. The token's roles, user, tenant and session are now
confirmed by ``tenantry_confirm_roles`` (``0024_confirm_roles``) at the head of the request's
first transaction, in that transaction's own round trip (``check_first`` in
infrastructure/db/tenancy.py), which nothing reaches before: the bearer read alone has no
caller left, and goes.

Revision ID: 0026_streamed_bearer_confirmed
Revises: 0025_add_file
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

from tenantry.infrastructure.db.migrations import earlier_revision

# revision identifiers, used by Alembic.
revision: str = "0026_streamed_bearer_confirmed"
down_revision: str | Sequence[str] | None = "0025_add_file"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE_ROLES = "tenantry_active_roles(uuid, uuid, uuid)"


def upgrade() -> None:
    op.execute(f"DROP FUNCTION {ACTIVE_ROLES}")


def downgrade() -> None:
    # The function as its own revision made it, grants and distribution included.
    made = earlier_revision("0022_active_roles")
    made.upgrade()

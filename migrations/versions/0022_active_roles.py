"""The bearer check's read as one statement that names its tenant itself.

A request whose body is streamed (an upload) is authenticated before its body is received, and
no pooled connection may wait on a client's bytes: its read was a transaction of its own, three
round trips (``BEGIN`` with the tenant's ``SET LOCAL``, the read, the ``ROLLBACK``).
``tenantry_active_roles`` sets the tenant for its own statement and gives back the caller's,
so it runs alone, in the implicit transaction of one statement: one round trip. It answers as
``SqlUserRepository.active_roles``' statement (infrastructure/db/users.py, ``_ACTIVE_ROLES``):
the user's roles while the user and the tenant are active and the session was not revoked,
else NULL. The tenant policy holds every table it reads.

On Citus the SET LOCAL of a lone statement's function stays on the coordinator: the function is
distributed with the tenant tables, by its tenant, so Citus runs each call on the worker holding
that tenant (``tenantry db distribute`` does it; this migration too, where the tables already
are).

Revision ID: 0022_active_roles
Revises: 0021_routed_sweeps
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

from tenantry.infrastructure.db.citus import delegate, users_distributed
from tenantry.infrastructure.db.rls import APP_ROLE

# revision identifiers, used by Alembic.
revision: str = "0022_active_roles"
down_revision: str | Sequence[str] | None = "0021_routed_sweeps"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE_ROLES = "tenantry_active_roles(uuid, uuid, uuid)"
ACTIVE_ROLES_FUNCTION = """
CREATE FUNCTION public.tenantry_active_roles(tenant uuid, member uuid, session uuid)
RETURNS character varying[]
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    callers text := pg_catalog.current_setting('app.tenant_id', true);
    found character varying[];
BEGIN
    EXECUTE pg_catalog.format('SET LOCAL app.tenant_id = %L', tenant);
    SELECT u.roles INTO found
    FROM public.users AS u JOIN public.tenants AS t ON t.id = u.tenant_id
    WHERE u.tenant_id = tenant AND u.id = member AND u.is_active AND t.status = 'active'
      -- Revoking a family marks every token of it: one revoked token means a revoked session.
      AND NOT EXISTS (
          SELECT FROM public.refresh_tokens AS r
          WHERE r.tenant_id = tenant AND r.family_id = session AND r.revoked_at IS NOT NULL
      );
    EXECUTE pg_catalog.format('SET LOCAL app.tenant_id = %L', coalesce(callers, ''));
    RETURN found;
END
$$
"""


def upgrade() -> None:
    op.execute(ACTIVE_ROLES_FUNCTION)
    # Functions are executable by PUBLIC when created: revoked in the same transaction.
    op.execute(f"REVOKE ALL ON FUNCTION {ACTIVE_ROLES} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {ACTIVE_ROLES} TO {APP_ROLE}")
    if users_distributed(op.get_bind()):
        op.execute(delegate(ACTIVE_ROLES))


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {ACTIVE_ROLES}")

"""The bearer check confirmed in BEGIN's round trip.

A signed-in request that runs a transaction began it (``BEGIN`` with the tenant's ``SET
LOCAL``, one round trip), then read the user's roles (another) before its own statements. The
access token names the roles the user had when it was issued; ``tenantry_confirm_roles`` holds
when they are still the user's, the user and the tenant active and the session not revoked,
and raises ``TR001`` otherwise. Sent in BEGIN's own message, it spares the read: the roles are
read only when it raises (a changed role, a disabled user, a revoked session), in a transaction
begun again. It answers as ``SqlUserRepository.active_roles``' read (infrastructure/db/users.py,
``_ACTIVE_ROLES``) compared with the token's roles as sets.

It runs in the transaction that set the tenant, under the tenant policy, and sets nothing
itself: on Citus the transaction block carries the ``SET LOCAL`` to the tenant's shards, as for
every statement of the unit of work, so it is not delegated.

Revision ID: 0024_confirm_roles
Revises: 0023_login_statements
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

from tenantry.infrastructure.db.rls import APP_ROLE

# revision identifiers, used by Alembic.
revision: str = "0024_confirm_roles"
down_revision: str | Sequence[str] | None = "0023_login_statements"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CONFIRM_ROLES = "tenantry_confirm_roles(uuid, uuid, uuid, character varying[])"
CONFIRM_ROLES_FUNCTION = """
CREATE FUNCTION public.tenantry_confirm_roles(
    tenant uuid, member uuid, session uuid, claimed character varying[]
)
RETURNS void
LANGUAGE plpgsql STABLE SECURITY INVOKER
AS $$
BEGIN
    IF NOT EXISTS (
        SELECT FROM public.users AS u JOIN public.tenants AS t ON t.id = u.tenant_id
        WHERE u.tenant_id = tenant AND u.id = member AND u.is_active AND t.status = 'active'
          AND u.roles @> claimed AND u.roles <@ claimed
          -- Revoking a family marks every token of it: one revoked token means a revoked session.
          AND NOT EXISTS (
              SELECT FROM public.refresh_tokens AS r
              WHERE r.tenant_id = tenant AND r.family_id = session AND r.revoked_at IS NOT NULL
          )
    ) THEN
        RAISE EXCEPTION 'the token''s roles are not confirmed' USING ERRCODE = 'TR001';
    END IF;
END
$$
"""


def upgrade() -> None:
    op.execute(CONFIRM_ROLES_FUNCTION)
    # Functions are executable by PUBLIC when created: revoked in the same transaction.
    op.execute(f"REVOKE ALL ON FUNCTION {CONFIRM_ROLES} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {CONFIRM_ROLES} TO {APP_ROLE}")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {CONFIRM_ROLES}")

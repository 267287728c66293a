"""A sign-in's reads and its write, each one statement that names its tenant itself.

A login read the tenant by its slug, then the user by login, in one transaction (``BEGIN``, the
two reads, the tenant's ``SET LOCAL`` between them, ``ROLLBACK``: five round trips), and after
argon2 wrote the session in another (``BEGIN`` with the tenant, the write, ``COMMIT``: three).
The slug's read needs no tenant (``tenants`` is the platform's); these two functions set the
tenant for their own statement and give back the caller's, as ``tenantry_active_roles``
(0022_active_roles) does, so each runs alone, in the implicit transaction of one statement:
three round trips in all. They answer as the statements they stand for
(infrastructure/db/users.py ``_BY_LOGIN``, infrastructure/db/auth.py ``_start_session``), which
a transaction that writes more (a rehashed password) still uses. Distributed by their tenant
on Citus, as 0022's.

Revision ID: 0023_login_statements
Revises: 0022_active_roles
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

from tenantry.infrastructure.db.citus import delegate, users_distributed
from tenantry.infrastructure.db.rls import APP_ROLE

# revision identifiers, used by Alembic.
revision: str = "0023_login_statements"
down_revision: str | Sequence[str] | None = "0022_active_roles"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

USER_BY_LOGIN = "tenantry_user_by_login(uuid, text)"
START_SESSION = "tenantry_start_session(uuid, uuid, uuid, uuid, text, timestamptz, timestamptz)"
FUNCTIONS = {
    USER_BY_LOGIN: """
CREATE FUNCTION public.tenantry_user_by_login(tenant uuid, login text)
RETURNS SETOF public.users
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    callers text := pg_catalog.current_setting('app.tenant_id', true);
BEGIN
    EXECUTE pg_catalog.format('SET LOCAL app.tenant_id = %L', tenant);
    -- Usernames hold no '@' and emails one, so one login names at most one user of a tenant.
    RETURN QUERY
    SELECT u.* FROM public.users AS u
    WHERE u.tenant_id = tenant
      AND (pg_catalog.lower(u.email) = login OR pg_catalog.lower(u.username) = login);
    EXECUTE pg_catalog.format('SET LOCAL app.tenant_id = %L', coalesce(callers, ''));
END
$$
""",
    START_SESSION: """
CREATE FUNCTION public.tenantry_start_session(
    tenant uuid, member uuid, token uuid, family uuid, hashed text, expires timestamptz,
    at timestamptz
)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    callers text := pg_catalog.current_setting('app.tenant_id', true);
    started boolean;
BEGIN
    EXECUTE pg_catalog.format('SET LOCAL app.tenant_id = %L', tenant);
    -- The login recorded and the token stored only where the user and its tenant are still
    -- active (either may have been disabled while argon2 ran).
    WITH signed_in AS (
        UPDATE public.users AS u SET last_login_at = at, updated_at = pg_catalog.now()
        WHERE u.tenant_id = tenant AND u.id = member AND u.is_active
          AND EXISTS (SELECT FROM public.tenants AS t WHERE t.id = tenant AND t.status = 'active')
        RETURNING u.id
    )
    INSERT INTO public.refresh_tokens (
        tenant_id, id, user_id, family_id, token_hash, expires_at, created_at, updated_at
    )
    SELECT tenant, token, s.id, family, hashed, expires, pg_catalog.now(), pg_catalog.now()
    FROM signed_in AS s;
    started := FOUND;
    EXECUTE pg_catalog.format('SET LOCAL app.tenant_id = %L', coalesce(callers, ''));
    RETURN started;
END
$$
""",
}


def upgrade() -> None:
    for signature, function in FUNCTIONS.items():
        op.execute(function)
        # Functions are executable by PUBLIC when created: revoked in the same transaction.
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO {APP_ROLE}")
    if users_distributed(op.get_bind()):
        for signature in FUNCTIONS:
            op.execute(delegate(signature))


def downgrade() -> None:
    for signature in FUNCTIONS:
        op.execute(f"DROP FUNCTION {signature}")

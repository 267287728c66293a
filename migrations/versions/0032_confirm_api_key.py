"""An API key confirmed again at an upload's row, as an access token is.

An upload authenticated by an API key reads the key, its user and their roles in a transaction
of its own, before its body. One that holds its quota ahead (over 1 MiB) writes its row in a
later transaction, after its bytes: a key revoked or expired meanwhile, its user deactivated or
given other roles, or its tenant suspended, would still store the file. ``tenantry_confirm_api_key``
holds when none of that happened and raises ``TR001`` otherwise, as ``tenantry_confirm_roles``
(``0024_confirm_roles``) does for an access token; the row's transaction begins with it, in the
same round trip (``check_again`` in infrastructure/db/tenancy.py).

It runs in the transaction that set the tenant, under the tenant policy, and sets nothing
itself, as ``tenantry_confirm_roles`` does.

Revision ID: 0032_confirm_api_key
Revises: 0031_add_file_creator_first
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

from tenantry.infrastructure.db.rls import APP_ROLE

# revision identifiers, used by Alembic.
revision: str = "0032_confirm_api_key"
down_revision: str | Sequence[str] | None = "0031_add_file_creator_first"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CONFIRM_API_KEY = "tenantry_confirm_api_key(uuid, uuid, uuid, character varying[])"
CONFIRM_API_KEY_FUNCTION = """
CREATE FUNCTION public.tenantry_confirm_api_key(
    tenant uuid, key uuid, member uuid, claimed character varying[]
)
RETURNS void
LANGUAGE plpgsql STABLE SECURITY INVOKER
AS $$
BEGIN
    IF NOT EXISTS (
        SELECT FROM public.api_keys AS k
        JOIN public.users AS u ON u.tenant_id = k.tenant_id AND u.id = k.user_id
        JOIN public.tenants AS t ON t.id = u.tenant_id
        WHERE k.tenant_id = tenant AND k.id = key AND k.user_id = member
          AND k.revoked_at IS NULL
          AND (k.expires_at IS NULL OR k.expires_at > pg_catalog.now())
          AND u.is_active AND t.status = 'active'
          AND u.roles @> claimed AND u.roles <@ claimed
    ) THEN
        RAISE EXCEPTION 'the API key is not confirmed' USING ERRCODE = 'TR001';
    END IF;
END
$$
"""


def upgrade() -> None:
    op.execute(CONFIRM_API_KEY_FUNCTION)
    # Functions are executable by PUBLIC when created: revoked in the same transaction.
    op.execute(f"REVOKE ALL ON FUNCTION {CONFIRM_API_KEY} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {CONFIRM_API_KEY} TO {APP_ROLE}")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {CONFIRM_API_KEY}")

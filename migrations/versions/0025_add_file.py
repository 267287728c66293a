"""An upload's row written by the statement its commit carries.

An upload's row was written in a transaction of its own: ``BEGIN`` with the tenant, the
statement that turns the upload's hold into usage and inserts the row (``_finish`` in
infrastructure/db/files.py), and ``COMMIT`` with the audit event and the webhook outbox row:
three round trips, with the ORM session's work around them. Everything that statement reads
and writes is known before it runs, and its answer is only whether the quota had room:
``tenantry_add_file`` does the same work and raises ``TR002`` when the quota has none, so the
statement travels with the ``COMMIT`` (``run_at_commit``) and a unit of work that writes
nothing else sends ``BEGIN``, the tenant, the row, its audit event, its outbox row and
``COMMIT`` in one message (``TenantSession.commit``).

The quota is the tenant's own ``quota_bytes`` setting when it is a whole number of bytes, else
``default_quota`` (the policy's), as ``_quota()`` in infrastructure/db/files.py reads it for a
hold. It runs under the tenant its transaction set, as its caller, the app role.

Revision ID: 0025_add_file
Revises: 0024_confirm_roles
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

from tenantry.infrastructure.db.rls import APP_ROLE

# revision identifiers, used by Alembic.
revision: str = "0025_add_file"
down_revision: str | Sequence[str] | None = "0024_confirm_roles"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ADD_FILE = (
    "tenantry_add_file(uuid, bigint, uuid, bigint, text, text, text, text, jsonb, text, uuid, "
    "timestamptz)"
)
ADD_FILE_FUNCTION = """
CREATE FUNCTION public.tenantry_add_file(
    tenant uuid, default_quota bigint, file_id uuid, file_size bigint, filename text,
    sniffed_type text, claimed_type text, digest text, meta jsonb, key text, creator uuid,
    at timestamptz
)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    quota numeric := coalesce(
        (SELECT (t.settings ->> 'quota_bytes')::numeric FROM public.tenants AS t
         WHERE t.id = tenant AND pg_catalog.jsonb_typeof(t.settings -> 'quota_bytes') = 'number'
           AND (t.settings ->> 'quota_bytes') ~ '^[0-9]+$'),
        default_quota
    );
    held bigint;
    charged boolean := false;
BEGIN
    -- The upload's hold goes; its size counts. Past its hold (it expired and was given back)
    -- the size must still fit beside the rest; within it, it fits already, even should the
    -- quota have been lowered since. The UPDATE re-reads its WHERE on the latest version of a
    -- row another transaction changed (READ COMMITTED): racing uploads cannot both pass.
    DELETE FROM public.file_reservations AS r WHERE r.tenant_id = tenant AND r.id = file_id
    RETURNING r.bytes INTO held;
    held := coalesce(held, 0);
    FOR attempt IN 1..2 LOOP
        UPDATE public.file_usage AS u
        SET used_bytes = u.used_bytes + file_size, file_count = u.file_count + 1,
            reserved_bytes = u.reserved_bytes - held, updated_at = pg_catalog.now()
        WHERE u.tenant_id = tenant AND u.id = tenant
          AND (held >= file_size OR u.used_bytes + u.reserved_bytes - held + file_size <= quota);
        charged := FOUND;
        EXIT WHEN charged OR attempt = 2;
        -- Refused, or the tenant's first upload, which held nothing ahead: its usage row.
        INSERT INTO public.file_usage (
            tenant_id, id, used_bytes, file_count, reserved_bytes, created_at, updated_at
        )
        VALUES (tenant, tenant, 0, 0, 0, pg_catalog.now(), pg_catalog.now())
        ON CONFLICT (tenant_id, id) DO NOTHING;
    END LOOP;
    IF NOT charged THEN
        RAISE EXCEPTION 'the tenant''s quota has no room for the upload' USING ERRCODE = 'TR002';
    END IF;
    INSERT INTO public.files (
        tenant_id, id, original_filename, size, content_type, claimed_content_type, sha256,
        metadata, storage_key, created_by, created_at, updated_at
    )
    VALUES (
        tenant, file_id, filename, file_size, sniffed_type, claimed_type, digest, meta, key,
        creator, at, at
    );
END
$$
"""


def upgrade() -> None:
    op.execute(ADD_FILE_FUNCTION)
    # Functions are executable by PUBLIC when created: revoked in the same transaction.
    op.execute(f"REVOKE ALL ON FUNCTION {ADD_FILE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {ADD_FILE} TO {APP_ROLE}")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {ADD_FILE}")

"""An upload's row holds its creator before the tenant's usage row: the order a user's delete takes.

``tenantry_add_file`` updated the tenant's usage row, then its insert's foreign key locked the
creator's row ``FOR KEY SHARE``. A user's delete locks the user ``FOR UPDATE`` first, then
clears the rows naming them, their files among them; a file's delete updates the file, then the
usage row. A user uploading while one of their files was deleted and they were deleted closed
the circle (the upload waiting for the user, the user's delete for the file, the file's delete
for the usage row the upload held), and PostgreSQL broke it with a 500. The function now locks
the creator first, as ``tenantry_add_document`` does (``0030_add_document_creator_first``): it
then waits for the user's delete holding nothing, and fails on its key to the user, a 401.

Revision ID: 0031_add_file_creator_first
Revises: 0030_add_document_creator_first
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

from tenantry.infrastructure.db.migrations import earlier_revision

# revision identifiers, used by Alembic.
revision: str = "0031_add_file_creator_first"
down_revision: str | Sequence[str] | None = "0030_add_document_creator_first"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Replaced in place: its grants stay as 0025_add_file made them.
ADD_FILE_FUNCTION = """
CREATE OR REPLACE FUNCTION public.tenantry_add_file(
    tenant uuid, default_quota bigint, file_id uuid, file_size bigint, filename text,
    sniffed_type text, claimed_type text, digest text, meta jsonb, key text, creator uuid,
    at timestamptz
)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    standing text;
    own_quota numeric;
    quota numeric;
    held bigint;
    charged boolean := false;
BEGIN
    -- The creator first, as a user's delete locks the user before the rows naming them (their
    -- files among them). A user deleted meanwhile is not found here, and the insert's key to
    -- them then fails.
    PERFORM FROM public.users AS u
    WHERE u.tenant_id = tenant AND u.id = creator
    FOR KEY SHARE OF u;
    SELECT t.status,
           CASE WHEN pg_catalog.jsonb_typeof(t.settings -> 'quota_bytes') = 'number'
                 AND (t.settings ->> 'quota_bytes') ~ '^[0-9]+$'
                THEN (t.settings ->> 'quota_bytes')::numeric END
    INTO standing, own_quota
    FROM public.tenants AS t WHERE t.id = tenant;
    IF standing IS DISTINCT FROM 'active' THEN
        RAISE EXCEPTION 'the tenant is not active' USING ERRCODE = 'TR004';
    END IF;
    quota := coalesce(own_quota, default_quota);
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


def downgrade() -> None:
    # The function as the revision before made it.
    op.execute(earlier_revision("0029_add_file_tenant_active").ADD_FILE_FUNCTION)

"""A document written by the commit, into a project the same statement finds live and holds so.

A document's create read its project (a round trip of its own after ``BEGIN``), then wrote the
document with the ``COMMIT``. Nothing held the project between the two: a delete of the project
committed in between soft-deleted the project's documents without the new one, which then
outlived its project. ``tenantry_add_document`` finds the project live and locks it ``FOR
SHARE`` (a soft delete's ``UPDATE`` waits for the lock, and one that took its own lock first is
waited for, its row then re-read and found deleted), then inserts the document; it raises
``TR003`` when the project is not live. It travels with the ``COMMIT`` (``run_at_commit``), so a
create is one round trip.

It runs under the tenant its transaction set, as its caller, the app role.

Revision ID: 0027_add_document
Revises: 0026_streamed_bearer_confirmed
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

from tenantry.infrastructure.db.rls import APP_ROLE

# revision identifiers, used by Alembic.
revision: str = "0027_add_document"
down_revision: str | Sequence[str] | None = "0026_streamed_bearer_confirmed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ADD_DOCUMENT = (
    "tenantry_add_document(uuid, uuid, uuid, uuid, text, text, jsonb, integer, timestamptz, "
    "timestamptz)"
)
ADD_DOCUMENT_FUNCTION = """
CREATE FUNCTION public.tenantry_add_document(
    tenant uuid, document_id uuid, project uuid, creator uuid, heading text, body text,
    meta jsonb, first_version integer, made_at timestamptz, changed_at timestamptz
)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
BEGIN
    -- Held until the transaction ends: the project's delete, which soft-deletes its documents
    -- by its commit, comes after this one's commit and takes the document with the rest.
    PERFORM FROM public.projects AS p
    WHERE p.tenant_id = tenant AND p.id = project AND p.deleted_at IS NULL
    FOR SHARE OF p;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the document''s project is not live' USING ERRCODE = 'TR003';
    END IF;
    INSERT INTO public.documents (
        tenant_id, id, project_id, created_by, title, content, metadata, version, created_at,
        updated_at
    )
    VALUES (
        tenant, document_id, project, creator, heading, body, meta, first_version, made_at,
        changed_at
    );
END
$$
"""


def upgrade() -> None:
    op.execute(ADD_DOCUMENT_FUNCTION)
    # Functions are executable by PUBLIC when created: revoked in the same transaction.
    op.execute(f"REVOKE ALL ON FUNCTION {ADD_DOCUMENT} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {ADD_DOCUMENT} TO {APP_ROLE}")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {ADD_DOCUMENT}")

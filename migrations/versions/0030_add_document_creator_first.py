"""A document's create holds its creator before its project: the order a user's delete takes.

``tenantry_add_document`` (``0027_add_document``) locked the document's project ``FOR SHARE``,
then its insert's foreign key locked the creator's row ``FOR KEY SHARE``. A user's delete locks
the user ``FOR UPDATE`` first, then clears the rows naming them, the projects they own among
them. A user creating a document in a project of their own while being deleted took the two
rows in the other order, and PostgreSQL broke the deadlock after a second by failing one side
with a 500: 24 of 160 creates and 3 of 40 deletes in one run. The function now locks the
creator ``FOR KEY SHARE`` first: a create under way holds the user, and the delete waits for it
and then clears it with the rest; a create that comes after waits for the delete and then fails
on its key to the user, which the API answers as the 401 of a caller who no longer exists.

Revision ID: 0030_add_document_creator_first
Revises: 0029_add_file_tenant_active
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

from tenantry.infrastructure.db.migrations import earlier_revision

# revision identifiers, used by Alembic.
revision: str = "0030_add_document_creator_first"
down_revision: str | Sequence[str] | None = "0029_add_file_tenant_active"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Replaced in place: its grants stay as 0027_add_document made them.
ADD_DOCUMENT_FUNCTION = """
CREATE OR REPLACE FUNCTION public.tenantry_add_document(
    tenant uuid, document_id uuid, project uuid, creator uuid, heading text, body text,
    meta jsonb, first_version integer, made_at timestamptz, changed_at timestamptz
)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
BEGIN
    -- The creator first, as a user's delete locks the user before the rows naming them. A
    -- user deleted meanwhile is not found here, and the insert's key to them then fails.
    PERFORM FROM public.users AS u
    WHERE u.tenant_id = tenant AND u.id = creator
    FOR KEY SHARE OF u;
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


def downgrade() -> None:
    # The function as its own revision made it.
    made = earlier_revision("0027_add_document")
    op.execute(
        made.ADD_DOCUMENT_FUNCTION.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
    )

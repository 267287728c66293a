"""The outbox's write holds the endpoints it writes deliveries for until the commit.

``tenantry_publish_webhook_event`` (``0019_webhooks``) inserted one delivery per subscribed
endpoint it saw. An endpoint whose delete was under way (or committed after the statement's
snapshot) was still seen, and the delivery's foreign key to it, checked against the latest
version, failed: the change being published, any change of the tenant, failed with it (a 500)
while an endpoint of the same event was deleted. The function now locks those endpoints ``FOR
KEY SHARE`` first: a delete under way is waited for and its endpoint then skipped; a delete
that comes after waits for this commit and takes the new delivery with the endpoint. An
endpoint's other changes (``FOR NO KEY UPDATE``) do not conflict with the lock.

A delivery's id is now made of its event's and endpoint's, not drawn at random: the event's
id (a UUIDv7) up to its variant, so it is a UUIDv7 of the event's time as the API's ids are,
then 60 bits of an MD5 of both ids. One delivery per event and endpoint, as before (a
redelivery updates the row). On Citus a volatile function in the ``SELECT``
(``gen_random_uuid()``) kept the statement from running on the tenant's worker: its rows were
collected on the coordinator and copied into the shard, and ``COPY FROM`` is refused on a table
under row level security. Without one, the statement runs where the tenant's shards are, as
one.

Revision ID: 0028_publish_holds_endpoints
Revises: 0027_add_document
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

from tenantry.infrastructure.db.migrations import earlier_revision

# revision identifiers, used by Alembic.
revision: str = "0028_publish_holds_endpoints"
down_revision: str | Sequence[str] | None = "0027_add_document"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Replaced in place: its grants stay as 0019_webhooks made them.
PUBLISH_FUNCTION = """
CREATE OR REPLACE FUNCTION tenantry_publish_webhook_event(
    tenant uuid, event uuid, kind text, body jsonb
)
RETURNS void
LANGUAGE plpgsql VOLATILE STRICT SECURITY INVOKER
AS $$
BEGIN
    -- Before the INSERT, whose snapshot, taken once the lock is held, no longer sees an
    -- endpoint whose delete the lock waited for.
    PERFORM FROM public.webhook_endpoints AS e
    WHERE e.tenant_id = tenant AND e.active AND kind = ANY (e.events)
    FOR KEY SHARE OF e;
    INSERT INTO public.webhook_deliveries (
        tenant_id, id, endpoint_id, event_id, event_type, payload, status, attempts,
        next_attempt_at, tries_since, log, created_at, updated_at
    )
    SELECT e.tenant_id,
        (pg_catalog.left(pg_catalog.replace(event::text, '-', ''), 16) || '8'
         || pg_catalog.left(pg_catalog.md5(event::text || e.id::text), 15))::uuid,
        e.id, event, kind, body, 'pending', 0,
        pg_catalog.now(), pg_catalog.now(), '[]'::jsonb, pg_catalog.now(), pg_catalog.now()
    FROM public.webhook_endpoints AS e
    WHERE e.tenant_id = tenant AND e.active AND kind = ANY (e.events);
END
$$
"""


def upgrade() -> None:
    op.execute(PUBLISH_FUNCTION)


def downgrade() -> None:
    # The function as its own revision made it.
    made = earlier_revision("0019_webhooks")
    op.execute(made.PUBLISH_FUNCTION.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))

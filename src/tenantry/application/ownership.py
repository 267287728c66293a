"""Who may destroy what inside a tenant: the one ownership rule of every use case.

Members read, create and edit the tenant's shared content; deleting or cancelling something
needs its creator, an admin or an owner of the tenant (or a platform superuser). A row whose
creator is unknown (it predates ownership, or its user was deleted) is left to the managers.
The table of who may do what is in docs/architecture.md.
"""

from __future__ import annotations

from uuid import UUID

from tenantry.domain.auth import Actor
from tenantry.domain.errors import Forbidden

# The user id of the system's own writes (a task's output when its submitter is gone): it
# names no user, so a row it creates records no creator.
SYSTEM_USER = UUID(int=0)


def may_destroy(actor: Actor, created_by: UUID | None) -> bool:
    return actor.can_manage or (created_by is not None and created_by == actor.user_id)


def require_may_destroy(actor: Actor, created_by: UUID | None, what: str) -> None:
    """Raise Forbidden unless ``actor`` may delete or cancel ``what`` (say "this file"),
    created by ``created_by``. Check that the thing exists in the actor's tenant first:
    another tenant's id is "not found", never "forbidden"."""
    if not may_destroy(actor, created_by):
        raise Forbidden(
            f"Only the creator of {what} or the tenant's owners and admins may do this."
        )


def creator(actor: Actor) -> UUID | None:
    """What a new row records as its creator when ``actor`` creates it."""
    return None if actor.user_id == SYSTEM_USER else actor.user_id

"""Tenant erasure: asked for by a platform superuser or by the tenant's owner; followed in the
platform's erasure log by superusers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar
from uuid import UUID

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from tenantry.application.erasure import EraseOwnTenant, GetErasure, ListErasures
from tenantry.domain.auth import Actor
from tenantry.domain.erasure import ERASURE_PAGE_MAX, ErasureState, Requester
from tenantry.presentation.bodies import NO_NUL, StrictJSONBody
from tenantry.presentation.errors import BODY_ERRORS, PARAMETER_ERRORS, problems
from tenantry.presentation.pagination import Offset, Page, page
from tenantry.presentation.reads import Read
from tenantry.presentation.security import SIGNED_IN_ERRORS, requires_superuser

Confirm = Annotated[
    str,
    QueryParameter(
        min_length=1, max_length=63, pattern=NO_NUL, description="The tenant's slug, typed again."
    ),
]
ErasureLimit = Annotated[
    int,
    QueryParameter(ge=1, le=ERASURE_PAGE_MAX, description=f"Page size (1 to {ERASURE_PAGE_MAX})."),
]


class EraseRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The confirmation of a tenant's erasure: the tenant's slug, typed again."""

    example: ClassVar[dict[str, Any]] = {"confirm": "acme"}

    # The tenant's slug, typed again.
    confirm: Annotated[str, msgspec.Meta(min_length=1, max_length=63, pattern=NO_NUL)]


class ErasureProgressRead(Read):
    """What an erasure has removed so far: rows, stored objects, and rows by table."""

    example: ClassVar[dict[str, Any]] = {"tables": {"documents": 1200, "projects": 20}}

    rows: int
    objects: int
    tables: dict[str, int]


class ErasureRead(Read):
    """A tenant's erasure: who asked for it, where it stands and what it has removed."""

    example: ClassVar[dict[str, Any]] = {
        "requested_by_type": "owner",
        "state": "finished",
        "progress": {"rows": 1520, "objects": 36, "tables": {"documents": 1200, "projects": 20}},
    }

    id: UUID
    tenant_id: UUID
    slug: str
    requested_by: UUID | None
    requested_by_type: Requester
    requested_at: datetime
    state: ErasureState
    started_at: datetime | None
    finished_at: datetime | None
    progress: ErasureProgressRead


ERASE_DESCRIPTION = (
    "At once: the tenant is suspended (its tokens, refresh tokens and API keys stop working), "
    "its queued tasks are cancelled and its running ones asked to stop, and the erasure is "
    "logged. A worker then removes every row and stored object of the tenant, and the tenant. "
    "`confirm` must be the tenant's slug (else 422). An erasure already under way is answered "
    "again."
)


class ErasurePage(Page[ErasureRead]):
    """A page of erasures."""

    items: list[ErasureRead]


class AdminErasureController(Controller):
    """The erasure log. The erasure itself is asked for at DELETE /api/v1/admin/tenants/{id}
    (presentation/tenants.py: one controller per path, or their OPTIONS handlers clash)."""

    path = "/api/v1/admin"
    tags = ["platform administration"]
    guards = [requires_superuser]

    @get(
        "/erasures",
        summary="The platform's erasure log, newest first (superusers)",
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 403),
    )
    async def list_erasures(
        self,
        actor: NamedDependency[Actor],
        list_erasures: NamedDependency[ListErasures],
        limit: ErasureLimit = 20,
        offset: Offset = 0,
    ) -> ErasurePage:
        found = await list_erasures(actor, limit=limit, offset=offset)
        return page(ErasurePage, found, limit, offset)

    @get(
        "/erasures/{erasure_id:uuid}",
        summary="One erasure: its state and what it removed so far (superusers)",
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 403, 404),
    )
    async def get_erasure(
        self,
        erasure_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        get_erasure: NamedDependency[GetErasure],
    ) -> ErasureRead:
        return ErasureRead.of(await get_erasure(actor, erasure_id))


class ErasureController(Controller):
    path = "/api/v1/tenant/erase"
    tags = ["tenants"]

    @post(
        status_code=202,
        summary="Erase your tenant: every row and object of it (owners)",
        description=ERASE_DESCRIPTION + " Your own credentials stop working with it.",
        responses=problems(*SIGNED_IN_ERRORS, *BODY_ERRORS, 403, 409),
    )
    async def erase_own_tenant(
        self,
        data: StrictJSONBody[EraseRequest],
        actor: NamedDependency[Actor],
        erase_own_tenant: NamedDependency[EraseOwnTenant],
    ) -> ErasureRead:
        return ErasureRead.of(await erase_own_tenant(actor, data.confirm))

"""Tenant sign-up, and platform administration of tenants (superusers)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from tenantry.application.auth import SELF_SIGNUP_SETTING
from tenantry.application.erasure import EraseTenant
from tenantry.application.tenants import CreateTenant, ListTenants, OwnerInput, UpdateTenant
from tenantry.domain.auth import Actor
from tenantry.domain.tenants import TenantStatus
from tenantry.presentation.bodies import CLOSED_OBJECT, NO_NUL, NOT_BLANK, StrictJSONBody
from tenantry.presentation.erasure import ERASE_DESCRIPTION, Confirm, ErasureRead
from tenantry.presentation.errors import BODY_ERRORS, PARAMETER_ERRORS, problems
from tenantry.presentation.pagination import Limit, Offset, Page, page
from tenantry.presentation.reads import Read
from tenantry.presentation.responses import NEW_RESOURCE, created
from tenantry.presentation.security import (
    NO_CREDENTIALS,
    PUBLIC,
    SIGNED_IN_ERRORS,
    client_address,
    requires_superuser,
)
from tenantry.presentation.users import NewPassword, UserRead


class OwnerCreate(msgspec.Struct, forbid_unknown_fields=True):
    """The tenant's first user, who owns it."""

    username: Annotated[str, msgspec.Meta(max_length=64, pattern=NO_NUL)]
    email: Annotated[str, msgspec.Meta(max_length=254, pattern=NO_NUL)]
    password: NewPassword


class TenantCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new tenant and its owner."""

    example: ClassVar[dict[str, Any]] = {"name": "Acme Corp"}

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NOT_BLANK)]
    slug: Annotated[str, msgspec.Meta(min_length=3, max_length=63, pattern=NO_NUL)]
    owner: Annotated[OwnerCreate, CLOSED_OBJECT]


class TenantRead(Read):
    """A tenant: its name, slug, status and settings."""

    example: ClassVar[dict[str, Any]] = {"name": "Acme Corp", "status": "active"}

    id: UUID
    name: str
    slug: str
    status: TenantStatus
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class TenantCreated(msgspec.Struct):
    """The new tenant and its owner."""

    tenant: TenantRead
    user: UserRead


class TenantUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """The changes to a tenant (a superuser's): fields left out stay as they are."""

    example: ClassVar[dict[str, Any]] = {"status": "suspended"}

    status: TenantStatus | None = None
    allow_self_signup: bool | None = None
    settings: dict[str, Any] | None = None


class TenantPage(Page[TenantRead]):
    """A page of tenants."""

    items: list[TenantRead]


class TenantController(Controller):
    path = "/api/v1/tenants"
    tags = ["tenants"]

    @post(
        response_headers=NEW_RESOURCE,
        opt=PUBLIC,
        security=NO_CREDENTIALS,
        summary="Create a tenant and its owner",
        description="A taken slug is 409.",
        responses=problems(*BODY_ERRORS, 409, 429),
    )
    async def create_tenant(
        self,
        request: Request[Any, Any, Any],
        data: StrictJSONBody[TenantCreate],
        create_tenant: NamedDependency[CreateTenant],
    ) -> Response[TenantCreated]:
        owner = OwnerInput(
            username=data.owner.username, email=data.owner.email, password=data.owner.password
        )
        tenant, user = await create_tenant(
            name=data.name, slug=data.slug, owner=owner, client=client_address(request)
        )
        body = TenantCreated(tenant=TenantRead.of(tenant), user=UserRead.of(user))
        return created(body, f"/api/v1/admin/tenants/{tenant.id}")


class AdminTenantController(Controller):
    path = "/api/v1/admin/tenants"
    tags = ["platform administration"]
    guards = [requires_superuser]

    @get(
        summary="Every tenant of the platform",
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 403),
    )
    async def list_tenants(
        self,
        actor: NamedDependency[Actor],
        list_tenants: NamedDependency[ListTenants],
        limit: Limit = 20,
        offset: Offset = 0,
    ) -> TenantPage:
        found = await list_tenants(actor, limit=limit, offset=offset)
        return page(TenantPage, found, limit, offset)

    @patch(
        "/{tenant_id:uuid}",
        summary="Suspend or reactivate a tenant, or change its settings",
        description="Suspending stops the tenant's credentials and its tasks: queued ones end "
        "cancelled at once, running ones at their next cancellation check. Reactivating "
        "restarts no task.",
        responses=problems(*SIGNED_IN_ERRORS, *BODY_ERRORS, 403, 404),
    )
    async def update_tenant(
        self,
        tenant_id: FromPath[UUID],
        data: StrictJSONBody[TenantUpdate],
        actor: NamedDependency[Actor],
        update_tenant: NamedDependency[UpdateTenant],
    ) -> TenantRead:
        settings = dict(data.settings or {})
        if data.allow_self_signup is not None:
            settings[SELF_SIGNUP_SETTING] = data.allow_self_signup
        tenant = await update_tenant(
            actor,
            tenant_id,
            status=data.status,
            settings=settings or None,
        )
        return TenantRead.of(tenant)

    @delete(
        "/{tenant_id:uuid}",
        status_code=202,
        summary="Erase a tenant: every row and object of it (superusers)",
        description=ERASE_DESCRIPTION + " Follow it at GET /api/v1/admin/erasures/{id}.",
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 403, 404, 409),
    )
    async def erase_tenant(
        self,
        tenant_id: FromPath[UUID],
        confirm: Confirm,
        actor: NamedDependency[Actor],
        erase_tenant: NamedDependency[EraseTenant],
    ) -> ErasureRead:
        return ErasureRead.of(await erase_tenant(actor, tenant_id, confirm))

"""Tenant endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from tenantry.application.tenants import CreateTenant
from tenantry.domain.tenants import Tenant


class TenantCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    slug: Annotated[str, msgspec.Meta(min_length=3, max_length=63)]


class TenantRead(msgspec.Struct):
    id: UUID
    name: str
    slug: str
    status: str
    created_at: datetime

    @classmethod
    def of(cls, tenant: Tenant) -> TenantRead:
        return cls(
            id=tenant.id,
            name=tenant.name,
            slug=tenant.slug,
            status=tenant.status.value,
            created_at=tenant.created_at,
        )


class TenantCreated(msgspec.Struct):
    tenant: TenantRead


class TenantController(Controller):
    path = "/api/v1/tenants"
    tags = ["tenants"]

    @post(summary="Create a tenant", description="A slug already taken answers 409.")
    async def create(
        self, data: JSONBody[TenantCreate], create_tenant: NamedDependency[CreateTenant]
    ) -> TenantCreated:
        tenant = await create_tenant(name=data.name, slug=data.slug)
        return TenantCreated(tenant=TenantRead.of(tenant))

"""Tenant persistence: the platform-level table every tenant-owned row points at."""

from __future__ import annotations

from uuid import UUID

from advanced_alchemy.exceptions import DuplicateKeyError
from advanced_alchemy.repository import SQLAlchemyAsyncRepository

from tenantry.domain.errors import Conflict
from tenantry.domain.tenants import NewTenant, Tenant, TenantStatus
from tenantry.infrastructure.db.models import TenantModel


class TenantModelRepository(SQLAlchemyAsyncRepository[TenantModel]):
    model_type = TenantModel


def to_tenant(row: TenantModel) -> Tenant:
    return Tenant(
        id=row.id,
        name=row.name,
        slug=row.slug,
        status=TenantStatus(row.status),
        settings=dict(row.settings),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class SqlTenantRepository:
    """Tenants are not tenant-owned, so this repository spans the platform on purpose."""

    def __init__(self, repository: TenantModelRepository) -> None:
        self.repository = repository

    async def add(self, tenant: NewTenant) -> Tenant:
        try:
            row = await self.repository.add(
                TenantModel(name=tenant.name, slug=tenant.slug, settings=tenant.settings)
            )
        except DuplicateKeyError:
            raise Conflict(
                f"The slug {tenant.slug!r} is taken.", fields={"slug": "is taken"}
            ) from None
        return to_tenant(row)

    async def get(self, tenant_id: UUID) -> Tenant | None:
        row = await self.repository.get_one_or_none(id=tenant_id)
        return None if row is None else to_tenant(row)

    async def get_by_slug(self, slug: str) -> Tenant | None:
        row = await self.repository.get_one_or_none(slug=slug)
        return None if row is None else to_tenant(row)

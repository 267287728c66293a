"""Tenant use cases."""

from __future__ import annotations

from tenantry.domain.errors import Conflict
from tenantry.domain.ports import UnitOfWork
from tenantry.domain.tenants import NewTenant, Tenant


class CreateTenant:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, *, name: str, slug: str) -> Tenant:
        new = NewTenant.create(name=name, slug=slug)
        async with self.uow:
            if await self.uow.tenants.get_by_slug(new.slug) is not None:
                raise Conflict(f"The slug {new.slug!r} is taken.", fields={"slug": "is taken"})
            tenant = await self.uow.tenants.add(new)
            await self.uow.commit()
        return tenant

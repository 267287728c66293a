"""Ports: what the application needs from the outside world, as small Protocols."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self
from uuid import UUID

from tenantry.domain.tenants import NewTenant, Tenant


class TenantRepository(Protocol):
    async def add(self, tenant: NewTenant) -> Tenant:
        """Store a new tenant; raise ``Conflict`` when its slug is taken."""
        ...

    async def get(self, tenant_id: UUID) -> Tenant | None: ...

    async def get_by_slug(self, slug: str) -> Tenant | None: ...


class UnitOfWork(Protocol):
    """One transaction around one use case: commit explicitly, roll back otherwise."""

    tenants: TenantRepository

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...

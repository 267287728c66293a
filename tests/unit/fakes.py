"""In-memory fakes of the ports, for fast use-case tests with no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from types import TracebackType
from typing import Self
from uuid import UUID, uuid4

from tenantry.domain.errors import Conflict
from tenantry.domain.tenants import NewTenant, Tenant, TenantStatus


class FakeTenantRepository:
    def __init__(self) -> None:
        self.rows: dict[UUID, Tenant] = {}

    async def add(self, tenant: NewTenant) -> Tenant:
        if any(row.slug == tenant.slug for row in self.rows.values()):
            raise Conflict("taken", fields={"slug": "is taken"})
        now = datetime.now(UTC)
        stored = Tenant(
            id=uuid4(),
            name=tenant.name,
            slug=tenant.slug,
            status=TenantStatus.ACTIVE,
            settings=dict(tenant.settings),
            created_at=now,
            updated_at=now,
        )
        self.rows[stored.id] = stored
        return stored

    async def get(self, tenant_id: UUID) -> Tenant | None:
        return self.rows.get(tenant_id)

    async def get_by_slug(self, slug: str) -> Tenant | None:
        return next((row for row in self.rows.values() if row.slug == slug), None)


class FakeUnitOfWork:
    """Commits by keeping a snapshot; rolls back by restoring it."""

    def __init__(self) -> None:
        self.tenants = FakeTenantRepository()
        self.committed: dict[UUID, Tenant] = {}
        self.commits = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.rollback()

    async def commit(self) -> None:
        self.committed = dict(self.tenants.rows)
        self.commits += 1

    async def rollback(self) -> None:
        self.tenants.rows = dict(self.committed)

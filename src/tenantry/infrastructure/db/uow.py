"""The SQLAlchemy unit of work: one session, one transaction, repositories bound to it."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from types import TracebackType
from typing import Any, Self, TypeVar, cast
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.domain.tenants import TenantRepository

# The one list of feature modules: importing each declares which port its repository serves.
from tenantry.infrastructure.db import features  # noqa: F401
from tenantry.infrastructure.db.repository import IMPLEMENTATIONS, PLATFORM_IMPLEMENTATIONS
from tenantry.infrastructure.db.tenants import SqlTenantRepository

R = TypeVar("R")


class SqlUnitOfWork:
    """Tenant repositories bind the session to their tenant: the application filter (wall 1)
    and PostgreSQL's row level security (wall 2) then agree on whose rows are visible."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @cached_property
    def tenants(self) -> TenantRepository:
        # Built when first used: most requests never touch the tenants table through it.
        return SqlTenantRepository(self.session)

    def repository(self, port: Callable[..., R], tenant_id: UUID) -> R:
        implementation: Any = IMPLEMENTATIONS.get(port)
        if implementation is None:
            raise LookupError(f"no repository serves {port!r}: is its module in features.py?")
        return cast("R", implementation(self.session, tenant_id))

    def platform(self, port: Callable[..., R]) -> R:
        implementation: Any = PLATFORM_IMPLEMENTATIONS.get(port)
        if implementation is None:
            raise LookupError(f"no repository serves {port!r}: is its module in features.py?")
        return cast("R", implementation(self.session))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Whatever was not committed explicitly is undone: a failed use case writes nothing.
        await self.rollback()

    async def commit(self) -> None:
        await self.session.commit()

    async def rollback(self) -> None:
        await self.session.rollback()

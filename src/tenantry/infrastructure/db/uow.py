"""The SQLAlchemy unit of work: one session, one transaction, repositories bound to it."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.domain.ports import TenantRepository
from tenantry.infrastructure.db.tenants import (
    SqlTenantRepository,
    TenantModelRepository,
)


class SqlUnitOfWork:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.tenants: TenantRepository = SqlTenantRepository(TenantModelRepository(session=session))

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

"""Wall 1 of tenancy: repositories that cannot be built without a tenant and never leave it."""

from __future__ import annotations

from typing import Any, Generic, TypeVar
from uuid import UUID

from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.infrastructure.db.models import TenantOwned

ModelT = TypeVar("ModelT", bound=TenantOwned)


class TenantScopedRepository(SQLAlchemyAsyncRepository[ModelT], Generic[ModelT]):
    """Filters every get, list, count and exists by ``tenant_id`` and stamps it on inserts.

    Statements written by hand in subclasses go through :meth:`scoped` for the same filter.
    """

    # A separate count query: count(*) OVER () slows down on large tables.
    count_with_window_function = False

    def __init__(self, *, session: AsyncSession, tenant_id: UUID, **kwargs: Any) -> None:
        self.tenant_id = tenant_id
        super().__init__(session=session, statement=self.scoped(select(self.model_type)), **kwargs)

    def scoped(self, statement: Select[Any]) -> Select[Any]:
        return statement.where(self.model_type.tenant_id == self.tenant_id)

    async def add(self, data: ModelT, *args: Any, **kwargs: Any) -> ModelT:
        data.tenant_id = self.tenant_id
        return await super().add(data, *args, **kwargs)

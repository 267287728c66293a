"""The SQLAlchemy unit of work: one session, one transaction, repositories bound to it."""

from __future__ import annotations

from functools import cached_property
from types import TracebackType
from typing import Self
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.domain.api_keys import ApiKeyRepository
from tenantry.domain.auth import RefreshTokenRepository
from tenantry.domain.documents import DocumentRepository
from tenantry.domain.files import FileRepository
from tenantry.domain.projects import ProjectRepository
from tenantry.domain.tasks import TaskRepository
from tenantry.domain.tenants import TenantRepository
from tenantry.domain.users import UserRepository
from tenantry.infrastructure.db.api_keys import ApiKeyModelRepository, SqlApiKeyRepository
from tenantry.infrastructure.db.auth import RefreshTokenModelRepository, SqlRefreshTokenRepository
from tenantry.infrastructure.db.documents import DocumentModelRepository, SqlDocumentRepository
from tenantry.infrastructure.db.files import (
    FileModelRepository,
    LiveFileModelRepository,
    SqlFileRepository,
)
from tenantry.infrastructure.db.projects import SqlProjectRepository
from tenantry.infrastructure.db.tasks import (
    SqlTaskRepository,
    TaskLogModelRepository,
    TaskModelRepository,
)
from tenantry.infrastructure.db.tenancy import bind_tenant
from tenantry.infrastructure.db.tenants import SqlTenantRepository, TenantModelRepository
from tenantry.infrastructure.db.users import SqlUserRepository


class SqlUnitOfWork:
    """Tenant repositories bind the session to their tenant: the application filter (wall 1)
    and PostgreSQL's row level security (wall 2) then agree on whose rows are visible."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @cached_property
    def tenants(self) -> TenantRepository:
        # Built when first used: most requests never touch the tenants table through it.
        return SqlTenantRepository(TenantModelRepository(session=self.session))

    def users(self, tenant_id: UUID) -> UserRepository:
        bind_tenant(self.session, tenant_id)
        return SqlUserRepository(self.session, tenant_id)

    def refresh_tokens(self, tenant_id: UUID) -> RefreshTokenRepository:
        bind_tenant(self.session, tenant_id)
        return SqlRefreshTokenRepository(
            RefreshTokenModelRepository(session=self.session, tenant_id=tenant_id)
        )

    def api_keys(self, tenant_id: UUID) -> ApiKeyRepository:
        bind_tenant(self.session, tenant_id)
        return SqlApiKeyRepository(ApiKeyModelRepository(session=self.session, tenant_id=tenant_id))

    def projects(self, tenant_id: UUID) -> ProjectRepository:
        bind_tenant(self.session, tenant_id)
        return SqlProjectRepository(self.session, tenant_id)

    def files(self, tenant_id: UUID) -> FileRepository:
        bind_tenant(self.session, tenant_id)
        return SqlFileRepository(
            LiveFileModelRepository(session=self.session, tenant_id=tenant_id),
            FileModelRepository(session=self.session, tenant_id=tenant_id),
        )

    def tasks(self, tenant_id: UUID) -> TaskRepository:
        bind_tenant(self.session, tenant_id)
        return SqlTaskRepository(
            TaskModelRepository(session=self.session, tenant_id=tenant_id),
            TaskLogModelRepository(session=self.session, tenant_id=tenant_id),
        )

    def documents(self, tenant_id: UUID) -> DocumentRepository:
        bind_tenant(self.session, tenant_id)
        return SqlDocumentRepository(
            DocumentModelRepository(session=self.session, tenant_id=tenant_id)
        )

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

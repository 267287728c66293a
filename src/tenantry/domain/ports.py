"""The ports every feature shares: the clock and the unit of work. A feature's own ports live
in its domain module (domain/projects.py holds ProjectRepository, and so on)."""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Protocol, Self
from uuid import UUID

from tenantry.domain.api_keys import ApiKeyRepository
from tenantry.domain.auth import RefreshTokenRepository
from tenantry.domain.documents import DocumentRepository
from tenantry.domain.files import FileRepository
from tenantry.domain.projects import ProjectRepository
from tenantry.domain.tasks import TaskRepository
from tenantry.domain.tenants import TenantRepository
from tenantry.domain.users import UserRepository


class Clock(Protocol):
    def now(self) -> datetime: ...


class UnitOfWork(Protocol):
    """One transaction around one use case: commit explicitly, roll back otherwise."""

    @property
    def tenants(self) -> TenantRepository: ...

    def users(self, tenant_id: UUID) -> UserRepository: ...

    def refresh_tokens(self, tenant_id: UUID) -> RefreshTokenRepository: ...

    def api_keys(self, tenant_id: UUID) -> ApiKeyRepository: ...

    def projects(self, tenant_id: UUID) -> ProjectRepository: ...

    def documents(self, tenant_id: UUID) -> DocumentRepository: ...

    def files(self, tenant_id: UUID) -> FileRepository: ...

    def tasks(self, tenant_id: UUID) -> TaskRepository: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...

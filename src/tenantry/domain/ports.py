"""The ports every feature shares: the clock and the unit of work. A feature's own ports live
in its domain module (domain/projects.py holds ProjectRepository, and so on)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self, TypeVar
from uuid import UUID

from tenantry.domain.tenants import TenantRepository

R = TypeVar("R")


class Clock(Protocol):
    def now(self) -> datetime: ...


class UnitOfWork(Protocol):
    """One transaction around one use case: commit explicitly, roll back otherwise."""

    @property
    def tenants(self) -> TenantRepository: ...

    def repository(self, port: Callable[..., R], tenant_id: UUID) -> R:
        """The repository of ``tenant_id``'s rows that implements ``port`` (a feature's
        repository Protocol, ``ProjectRepository`` say), in this unit of work's transaction."""
        ...

    def platform(self, port: Callable[..., R]) -> R:
        """The repository of platform rows (no tenant's: the erasure log) that implements
        ``port``, in this unit of work's transaction."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...

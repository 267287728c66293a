"""Projects: the tenant-owned containers of documents."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol
from uuid import UUID

import msgspec

from tenantry.domain.errors import Invalid

NAME_MAX_LENGTH = 200
DESCRIPTION_MAX_LENGTH = 10_000


class Project(msgspec.Struct, kw_only=True, frozen=True):
    id: UUID
    tenant_id: UUID
    owner_id: UUID | None
    name: str
    description: str
    version: int
    created_at: datetime
    updated_at: datetime


class ListQuery(msgspec.Struct, kw_only=True, frozen=True):
    """Paging and filters shared by the list endpoints of tenant data."""

    limit: int = 20
    offset: int = 0
    q: str | None = None
    order_by: str = "-created_at"
    created_after: datetime | None = None
    created_before: datetime | None = None


def clean_name(name: str) -> str:
    name = " ".join(name.split())
    if not name:
        raise Invalid("The project is not valid.", fields={"name": "must not be blank"})
    if len(name) > NAME_MAX_LENGTH:
        raise Invalid(
            "The project is not valid.",
            fields={"name": f"must be at most {NAME_MAX_LENGTH} characters"},
        )
    return name


def clean_description(description: str) -> str:
    if len(description) > DESCRIPTION_MAX_LENGTH:
        raise Invalid(
            "The project is not valid.",
            fields={"description": f"must be at most {DESCRIPTION_MAX_LENGTH} characters"},
        )
    return description


class ProjectRepository(Protocol):
    """Live (not deleted) projects of one tenant."""

    async def add(self, *, owner_id: UUID | None, name: str, description: str) -> Project: ...

    async def get(self, project_id: UUID) -> Project | None: ...

    async def list(self, query: ListQuery) -> tuple[list[Project], int]: ...

    async def update(
        self,
        project_id: UUID,
        *,
        expected_version: int | None,
        name: str | None = None,
        description: str | None = None,
    ) -> Project | None:
        """Apply changes and bump the version; raise ``StaleVersion`` when
        ``expected_version`` is given and no longer current; None when there is no project."""
        ...

    async def soft_delete(self, project_id: UUID, at: datetime) -> bool:
        """Mark the project and all its documents deleted."""
        ...

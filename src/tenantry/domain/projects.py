"""Projects: the tenant-owned containers of documents."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Protocol
from uuid import UUID

import msgspec

from tenantry.domain.errors import Invalid
from tenantry.domain.repository import Repository

NAME_MAX_LENGTH = 200
DESCRIPTION_MAX_LENGTH = 10_000


class Project(msgspec.Struct, kw_only=True, frozen=True):
    # What a list's ``q`` searches.
    search_field: ClassVar[str] = "name"

    id: UUID
    tenant_id: UUID
    owner_id: UUID | None
    name: str
    description: str
    version: int
    created_at: datetime
    updated_at: datetime


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


class ProjectRepository(Repository[Project], Protocol):
    """Live (not deleted) projects of one tenant."""

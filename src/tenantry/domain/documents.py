"""Documents: titled content with free-form metadata, inside a project."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Protocol
from uuid import UUID

import msgspec

from tenantry.domain.errors import Invalid
from tenantry.domain.repository import Repository

TITLE_MAX_LENGTH = 300
CONTENT_MAX_LENGTH = 500_000
METADATA_MAX_KEYS = 100


class Document(msgspec.Struct, kw_only=True, frozen=True):
    # What a list's ``q`` searches.
    search_field: ClassVar[str] = "title"

    id: UUID
    tenant_id: UUID
    project_id: UUID
    # The author; None for rows older than ownership or a deleted user.
    created_by: UUID | None
    title: str
    content: str
    metadata: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime


def clean_title(title: str) -> str:
    title = " ".join(title.split())
    if not title or len(title) > TITLE_MAX_LENGTH:
        raise Invalid(
            "The document is not valid.",
            fields={"title": f"must be 1 to {TITLE_MAX_LENGTH} characters"},
        )
    return title


def check_content(content: str) -> str:
    if len(content) > CONTENT_MAX_LENGTH:
        raise Invalid(
            "The document is not valid.",
            fields={"content": f"must be at most {CONTENT_MAX_LENGTH} characters"},
        )
    return content


def check_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    if len(metadata) > METADATA_MAX_KEYS:
        raise Invalid(
            "The document is not valid.",
            fields={"metadata": f"must have at most {METADATA_MAX_KEYS} keys"},
        )
    return metadata


class DocumentRepository(Repository[Document], Protocol):
    """Live documents of one tenant; each names its project (``project_id=`` narrows).

    ``add_at_commit`` writes a document only into a live project of the tenant, which the
    commit finds and holds live until the transaction ends (a delete of the project then
    comes after, and takes the document with the rest); the commit raises ``NotFound`` for
    any other project, and writes nothing."""

"""Tenant export: every row of a tenant and every live file of it, as one zip archive.

The archive holds ``manifest.json``, ``tables/<table>.jsonl`` (one JSON object a row) for the
tenant's own ``tenants`` row and every tenant table, and ``files/<file id>`` with each live
file's bytes. Secret columns are never exported: they are listed here, once, by table and column.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import msgspec

from tenantry.domain.files import StoredFile

TASK_TYPE = "tenant.export"
# Raised when the archive's layout or the manifest's fields change meaning.
FORMAT_VERSION = 1
# The tenant's own row, exported beside the tenant tables under this table name.
TENANTS = "tenants"

# Columns never exported: credentials and what would let one check a guessed credential.
SECRET_COLUMNS: frozenset[tuple[str, str]] = frozenset(
    {
        ("users", "password_hash"),
        ("api_keys", "key_hash"),
        ("refresh_tokens", "token_hash"),
        ("webhook_endpoints", "secret"),
    }
)
# Columns whose names look secret but are not: exported. A column is here on purpose, after
# someone read what it holds.
NOT_SECRET_COLUMNS: frozenset[tuple[str, str]] = frozenset(
    {
        # The id of the API key that acted, not the key.
        ("audit_events", "api_key_id"),
        # Where the file's bytes are stored: a path, not a credential.
        ("files", "storage_key"),
    }
)
# What a secret column is likely to be called. A tenant table gaining a column that matches must
# have it listed in one of the two sets above (a test reads the catalog and holds it to this).
SECRET_LOOKING = re.compile(
    r"hash|secret|token|passw|key|salt|nonce|private|credential|cipher|signature|otp",
    re.IGNORECASE,
)


def looks_secret(column: str) -> bool:
    return SECRET_LOOKING.search(column) is not None


def exported(table: str, column: str) -> bool:
    return (table, column) not in SECRET_COLUMNS


class ExportTable(msgspec.Struct, frozen=True):
    """One table as the export reads it: the columns it writes, and the primary key it pages
    by (a subset of ``columns``, in the key's order)."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]


class TableEntry(msgspec.Struct, kw_only=True, frozen=True):
    path: str
    rows: int
    sha256: str


class FileEntry(msgspec.Struct, kw_only=True, frozen=True):
    id: UUID
    path: str
    size: int
    sha256: str


class Manifest(msgspec.Struct, kw_only=True, frozen=True):
    """``manifest.json`` but its ``files`` list, which is streamed after these fields (a tenant
    may have more files than a manifest held in memory should list)."""

    format_version: int
    tenant_id: UUID
    tenant_slug: str
    created_at: datetime
    tables: dict[str, TableEntry]


class TenantExportRepository(Protocol):
    """One tenant's rows of every tenant table, read under its row level security."""

    async def tables(self) -> list[ExportTable]:
        """The tenant's own ``tenants`` row first, then every tenant table the database lists,
        each with its exported columns (secret ones left out)."""
        ...

    async def rows(
        self, table: ExportTable, *, after: tuple[Any, ...] | None, limit: int
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` rows of ``table`` whose key comes after ``after`` (None: from the
        first), in key order, each by exported column name."""
        ...

    async def live_files(self, *, after: UUID | None, limit: int) -> list[StoredFile]:
        """Up to ``limit`` live (not deleted) files after ``after`` in id order, but the
        archives of earlier exports: each export would otherwise hold all earlier ones."""
        ...

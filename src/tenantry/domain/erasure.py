"""Tenant erasure: every row and every stored object of a tenant removed for good, at the
request of its owner or of a platform superuser.

The request suspends the tenant at once and writes an entry in the platform's erasure log; a
worker then removes the tenant's rows table by table, its objects, and the tenant itself, in
short batches, each counted in the log as it commits. The log is platform data: it outlives
the tenant, and it is the record of who asked and when (the tenant's own audit trail goes with
the rest of its rows).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Protocol
from uuid import UUID

import msgspec

from tenantry.domain.errors import Forbidden, Invalid
from tenantry.domain.files import OBJECTS_PREFIX
from tenantry.domain.tenants import PLATFORM_SLUG, Tenant

# Why a pending task of an erased tenant ended.
TENANT_ERASED = "The tenant is being erased."
ERASURE_PAGE_MAX = 100


class ErasureState(enum.StrEnum):
    """Where a tenant's erasure stands: pending, running, or finished."""

    # Asked for; no worker has begun.
    PENDING = "pending"
    # A worker began; a crash leaves it so, and the sweep picks it up again.
    RUNNING = "running"
    FINISHED = "finished"


class Requester(enum.StrEnum):
    """Who asked: a platform superuser, the tenant's owner, or an operator at the CLI."""

    SUPERUSER = "superuser"
    OWNER = "owner"
    OPERATOR = "operator"


class ErasureProgress(msgspec.Struct, kw_only=True, frozen=True):
    """What was removed so far: rows in all, objects, and rows by table."""

    rows: int = 0
    objects: int = 0
    tables: dict[str, int] = msgspec.field(default_factory=dict)


class TenantErasure(msgspec.Struct, kw_only=True, frozen=True):
    id: UUID
    tenant_id: UUID
    slug: str
    requested_by: UUID | None
    requested_by_type: Requester
    request_id: str | None
    state: ErasureState
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    # The last sign of life of the worker on it: each batch beats.
    heartbeat_at: datetime | None
    progress: ErasureProgress


class TenantTable(msgspec.Struct, kw_only=True, frozen=True):
    """A tenant table to empty. ``append_only``: the app may not delete from it (the audit
    trail); its rows go through the database's erasure function, which removes only the rows
    of a tenant with an erasure under way."""

    name: str
    append_only: bool


def tenant_prefix(tenant_id: UUID) -> str:
    """Where every object of the tenant is stored (``tenants/{tenant_id}/...``)."""
    return f"{OBJECTS_PREFIX}{tenant_id}/"


def check_erasable(tenant: Tenant, confirm: str | None) -> None:
    """The caller must type the tenant's slug: an erasure is never one stray click. The
    platform's own tenant, where the superusers live, is never erased."""
    if tenant.slug == PLATFORM_SLUG:
        raise Forbidden("The platform tenant cannot be erased.")
    if confirm is None or confirm.strip().lower() != tenant.slug:
        raise Invalid(
            "Confirm the erasure with the tenant's slug.",
            fields={"confirm": "must be the slug of the tenant to erase"},
        )


class ErasureLog(Protocol):
    """The platform's erasure log: entries of every tenant, never removed."""

    async def add(
        self,
        tenant: Tenant,
        *,
        requested_by: UUID | None,
        requested_by_type: Requester,
        request_id: str | None,
    ) -> TenantErasure:
        """A new pending entry; raise ``Conflict`` when the tenant has one unfinished."""
        ...

    async def get(self, erasure_id: UUID) -> TenantErasure | None: ...

    async def unfinished(self, tenant_id: UUID) -> TenantErasure | None:
        """The tenant's erasure under way, if any."""
        ...

    async def page(self, *, limit: int, offset: int) -> tuple[list[TenantErasure], int]:
        """Newest first."""
        ...

    async def stalled(self, quiet_since: datetime) -> list[TenantErasure]:
        """Unfinished erasures with no sign of life since ``quiet_since``: their worker died,
        or their job was never enqueued."""
        ...

    async def start(self, erasure_id: UUID, at: datetime) -> TenantErasure | None:
        """Mark it running (its first start time kept) and beat; None when it is finished."""
        ...

    async def count(
        self, erasure_id: UUID, at: datetime, *, table: str | None = None, removed: int = 0
    ) -> None:
        """Add ``removed`` rows of ``table`` (objects when no table is named) and beat."""
        ...

    async def finish(self, erasure_id: UUID, at: datetime) -> TenantErasure | None: ...


class TenantData(Protocol):
    """Every row of one tenant, whatever its table: what an erasure removes. Rows are found
    from the database's catalog, so a table added later is covered."""

    async def tables(self) -> list[TenantTable]:
        """Every tenant table, each before the tables it refers to: children first."""
        ...

    async def delete_batch(self, table: TenantTable, limit: int) -> int:
        """Remove at most ``limit`` of the tenant's rows of ``table``; how many were removed."""
        ...

    async def remove_tenant(self) -> bool:
        """Remove the tenant's own row (whatever row slipped in since goes with it)."""
        ...


class ErasureQueue(Protocol):
    """Carries erasures to the workers; one job per erasure at a time."""

    async def enqueue(self, erasure_id: UUID, *, request_id: str | None) -> None: ...

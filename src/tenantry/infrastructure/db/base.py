"""What every ORM model shares: one declarative base and its metadata, the tenant-owned base,
the creator's key. Each feature's model lives in its feature's module; ``features.py`` imports
them all, so the metadata has every table only through it. Ids are UUIDv7, timestamps
timezone-aware UTC."""

from __future__ import annotations

from uuid import UUID

from advanced_alchemy.base import UUIDv7AuditBase
from sqlalchemy import ForeignKey, ForeignKeyConstraint
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

metadata = UUIDv7AuditBase.metadata


class TenantOwned(UUIDv7AuditBase):
    """Every tenant-owned table: keyed by ``(tenant_id, id)``, cascading with its tenant.

    ``tenant_id`` leads the primary key so that the table can be distributed by tenant (Citus
    wants the distribution column in every primary key, unique key and foreign key), and so that
    other tenant tables reference a row through ``(tenant_id, <its id>)``: a reference can only
    point at a row of its own tenant.
    """

    __abstract__ = True

    @declared_attr
    def tenant_id(cls) -> Mapped[UUID]:
        # Before id's sort_order (-100): the key's columns follow the table's column order.
        return mapped_column(
            ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True, sort_order=-110
        )


def creator_key() -> ForeignKeyConstraint:
    """The creator of a row is a user of its own tenant. Deleting that user clears
    ``created_by`` first (``MADE_BY`` in users.py): the row remains, for admins and owners to
    manage."""
    return ForeignKeyConstraint(["tenant_id", "created_by"], ["users.tenant_id", "users.id"])

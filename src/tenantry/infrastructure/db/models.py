"""ORM models. One declarative base; ids are UUIDv7, timestamps timezone-aware UTC."""

from __future__ import annotations

from typing import Any

from advanced_alchemy.base import UUIDv7AuditBase
from sqlalchemy import String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.domain.tenants import TenantStatus

metadata = UUIDv7AuditBase.metadata


class TenantModel(UUIDv7AuditBase):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    status: Mapped[str] = mapped_column(
        String(20),
        default=TenantStatus.ACTIVE.value,
        server_default=TenantStatus.ACTIVE.value,
    )
    settings: Mapped[dict[str, Any]] = mapped_column(
        JSONB, default=dict, server_default=text("'{}'::jsonb")
    )

"""ORM models. One declarative base; ids are UUIDv7, timestamps timezone-aware UTC."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.base import UUIDv7AuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from tenantry.domain.tenants import TenantStatus

metadata = UUIDv7AuditBase.metadata


class TenantModel(UUIDv7AuditBase):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    status: Mapped[str] = mapped_column(
        String(20), default=TenantStatus.ACTIVE.value, server_default=TenantStatus.ACTIVE.value
    )
    settings: Mapped[dict[str, Any]] = mapped_column(
        JSONB, default=dict, server_default=text("'{}'::jsonb")
    )


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


class UserModel(TenantOwned):
    __tablename__ = "users"
    __table_args__ = (
        Index("uq_users_tenant_email", "tenant_id", func.lower(text("email")), unique=True),
        Index("uq_users_tenant_username", "tenant_id", func.lower(text("username")), unique=True),
    )

    username: Mapped[str] = mapped_column(String(64))
    email: Mapped[str] = mapped_column(String(254))
    password_hash: Mapped[str] = mapped_column(String(255))
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(20)))
    settings: Mapped[dict[str, Any]] = mapped_column(
        JSONB, default=dict, server_default=text("'{}'::jsonb")
    )
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    last_login_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class RefreshTokenModel(TenantOwned):
    __tablename__ = "refresh_tokens"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "user_id"], ["users.tenant_id", "users.id"], ondelete="CASCADE"
        ),
        Index("uq_refresh_tokens_tenant_hash", "tenant_id", "token_hash", unique=True),
        Index("ix_refresh_tokens_tenant_family", "tenant_id", "family_id"),
    )

    user_id: Mapped[UUID]
    family_id: Mapped[UUID]
    token_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class ApiKeyModel(TenantOwned):
    __tablename__ = "api_keys"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "user_id"], ["users.tenant_id", "users.id"], ondelete="CASCADE"
        ),
        Index("uq_api_keys_tenant_prefix", "tenant_id", "prefix", unique=True),
        Index("ix_api_keys_tenant_user", "tenant_id", "user_id"),
    )

    user_id: Mapped[UUID]
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(12))
    key_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


def creator_key() -> ForeignKeyConstraint:
    """The creator of a row is a user of its own tenant. Deleting that user sets only
    ``created_by`` to NULL (tenant_id is part of the key and must stay): the row remains, for
    admins and owners to manage."""
    return ForeignKeyConstraint(
        ["tenant_id", "created_by"],
        ["users.tenant_id", "users.id"],
        ondelete="SET NULL (created_by)",
    )


class ProjectModel(TenantOwned):
    __tablename__ = "projects"
    __table_args__ = (
        # SET NULL on owner_id alone: tenant_id is part of the key and must stay.
        ForeignKeyConstraint(
            ["tenant_id", "owner_id"],
            ["users.tenant_id", "users.id"],
            ondelete="SET NULL (owner_id)",
        ),
        Index("ix_projects_tenant_created", "tenant_id", "created_at"),
        Index("ix_projects_tenant_updated", "tenant_id", "updated_at"),
        Index("ix_projects_tenant_name", "tenant_id", "name"),
    )

    owner_id: Mapped[UUID | None]
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class DocumentModel(TenantOwned):
    __tablename__ = "documents"
    __table_args__ = (
        # A document can only belong to a project of its own tenant.
        ForeignKeyConstraint(
            ["tenant_id", "project_id"], ["projects.tenant_id", "projects.id"], ondelete="CASCADE"
        ),
        creator_key(),
        Index("ix_documents_tenant_project_created", "tenant_id", "project_id", "created_at"),
    )

    project_id: Mapped[UUID]
    created_by: Mapped[UUID | None]
    title: Mapped[str] = mapped_column(String(300))
    content: Mapped[str] = mapped_column(Text, default="", server_default="")
    # "metadata" is taken by SQLAlchemy's declarative base; the column keeps the API's name.
    meta: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, default=dict, server_default=text("'{}'::jsonb")
    )
    version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class FileModel(TenantOwned):
    __tablename__ = "files"
    __table_args__ = (creator_key(), Index("ix_files_tenant_created", "tenant_id", "created_at"))

    created_by: Mapped[UUID | None]
    original_filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(100))
    claimed_content_type: Mapped[str | None] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    meta: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, default=dict, server_default=text("'{}'::jsonb")
    )
    storage_key: Mapped[str] = mapped_column(String(300))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class TaskModel(TenantOwned):
    __tablename__ = "tasks"
    __table_args__ = (
        creator_key(),
        Index("ix_tasks_tenant_status", "tenant_id", "status"),
        Index("ix_tasks_tenant_created", "tenant_id", "created_at"),
    )

    type: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="pending", server_default="pending")
    progress: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    input_files: Mapped[list[UUID]] = mapped_column(ARRAY(Uuid), default=list, server_default="{}")
    output_files: Mapped[list[UUID]] = mapped_column(ARRAY(Uuid), default=list, server_default="{}")
    config: Mapped[dict[str, Any]] = mapped_column(
        JSONB, default=dict, server_default=text("'{}'::jsonb")
    )
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error_message: Mapped[str | None] = mapped_column(Text)
    retry_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_by: Mapped[UUID | None]
    cancel_requested: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class TaskLogModel(TenantOwned):
    __tablename__ = "task_logs"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "task_id"], ["tasks.tenant_id", "tasks.id"], ondelete="CASCADE"
        ),
        Index("ix_task_logs_tenant_task", "tenant_id", "task_id", "created_at"),
    )

    task_id: Mapped[UUID]
    attempt: Mapped[int] = mapped_column(Integer)
    operation: Mapped[str] = mapped_column(String(100))
    success: Mapped[bool] = mapped_column(Boolean)
    duration_ms: Mapped[float]
    error: Mapped[str | None] = mapped_column(Text)

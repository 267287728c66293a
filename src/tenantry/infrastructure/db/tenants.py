"""Tenant persistence: the platform-level table every tenant-owned row points at."""

from __future__ import annotations

from functools import cached_property
from typing import Any
from uuid import UUID

import msgspec
from advanced_alchemy.base import UUIDv7AuditBase
from advanced_alchemy.exceptions import IntegrityError
from advanced_alchemy.filters import LimitOffset, OrderBy
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import String, bindparam, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.domain.errors import Conflict
from tenantry.domain.tenants import NewTenant, Tenant, TenantStatus
from tenantry.infrastructure.db.tenancy import DriverStatement


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


async def lock_tenant_row(
    session: AsyncSession | async_scoped_session[AsyncSession], tenant_id: UUID
) -> None:
    """Hold the tenant's row until the transaction ends, so that a check over the tenant's rows
    (its quota, its owners) and the write it allows run one writer at a time.

    FOR NO KEY UPDATE (key_share=True): writers queue behind each other, but not behind the
    key-share lock every foreign key to the tenant takes; with FOR UPDATE two writers that
    inserted rows first would deadlock.
    """
    # populate_existing: the locking SELECT runs even when the row is in the session already.
    await session.get(
        TenantModel, tenant_id, with_for_update={"key_share": True}, populate_existing=True
    )


class TenantModelRepository(SQLAlchemyAsyncRepository[TenantModel]):
    model_type = TenantModel
    count_with_window_function = False


def to_tenant(row: TenantModel) -> Tenant:
    return Tenant(
        id=row.id,
        name=row.name,
        slug=row.slug,
        status=TenantStatus(row.status),
        settings=dict(row.settings),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


_BY_SLUG = DriverStatement(
    select(TenantModel.__table__).where(TenantModel.__table__.c.slug == bindparam("slug"))
)


class SqlTenantRepository:
    """Tenants are not tenant-owned, so this repository spans the platform on purpose."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @cached_property
    def repository(self) -> TenantModelRepository:
        # Built when first used: advanced-alchemy's constructor builds its base statement, a
        # good part of a sign-in's tenant lookup, which runs without it.
        return TenantModelRepository(session=self.session)

    async def add(self, tenant: NewTenant) -> Tenant:
        try:
            row = await self.repository.add(
                TenantModel(name=tenant.name, slug=tenant.slug, settings=dict(tenant.settings))
            )
        except IntegrityError as error:
            # Two sign-ups of one slug at once: the second waits on the first's index entry and
            # fails on it once that commits, after the slug was read free. advanced-alchemy
            # reports a unique violation as a DuplicateKeyError only when it can read the
            # server's (English) message; the constraint's name is always in it.
            if "uq_tenants_slug" not in str(error.__cause__ or error):
                raise
            raise Conflict(
                f"The slug {tenant.slug!r} is taken.", fields={"slug": "is taken"}
            ) from None
        return to_tenant(row)

    async def get(self, tenant_id: UUID) -> Tenant | None:
        row = await self.repository.get_one_or_none(id=tenant_id)
        return None if row is None else to_tenant(row)

    async def get_by_slug(self, slug: str, *, alone: bool = False) -> Tenant | None:
        # Every sign-in starts here: compiled once, run on the driver.
        if alone:
            record = await _BY_SLUG.fetch_row_alone(self.session, slug=slug)
        else:
            record = await _BY_SLUG.fetch_row(self.session, slug=slug)
        return None if record is None else msgspec.convert(dict(record), Tenant)

    async def list(self, *, limit: int, offset: int) -> tuple[list[Tenant], int]:
        rows, total = await self.repository.get_many_and_count(
            OrderBy(field_name="created_at", sort_order="asc"),
            # Tenants made in one transaction share a created_at: without a total order, pages
            # of the platform jobs that walk every tenant overlap and skip some.
            OrderBy(field_name="id", sort_order="asc"),
            LimitOffset(limit=limit, offset=offset),
        )
        return [to_tenant(row) for row in rows], total

    async def with_setting(self, name: str) -> dict[UUID, Any]:
        settings = TenantModel.settings
        rows = await self.session.execute(
            select(TenantModel.id, settings[name]).where(settings.has_key(name))
        )
        return {row.id: row[1] for row in rows}

    async def update(
        self,
        tenant_id: UUID,
        *,
        status: TenantStatus | None = None,
        settings: dict[str, Any] | None = None,
    ) -> Tenant | None:
        row = await self.repository.get_one_or_none(id=tenant_id)
        if row is None:
            return None
        if status is not None:
            row.status = status.value
        if settings is not None:
            row.settings = settings
        return to_tenant(await self.repository.update(row))

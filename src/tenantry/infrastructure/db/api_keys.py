"""API keys: stored as hashes behind a public prefix."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.filters import OrderBy
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import ForeignKeyConstraint, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.domain.api_keys import ApiKeyRepository
from tenantry.domain.auth import ApiKey
from tenantry.domain.users import Role
from tenantry.infrastructure.db.base import TenantOwned
from tenantry.infrastructure.db.repository import TenantRows
from tenantry.infrastructure.db.tenancy import check_later, sql_literals
from tenantry.infrastructure.db.users import NOT_CONFIRMED


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


# The key, its user's roles and its tenant confirmed again (migration 0032_confirm_api_key).
_CONFIRM_API_KEY = (
    "SELECT tenantry_confirm_api_key({tenant_id}, {api_key_id}, {user_id}, "
    "{roles}::character varying[])"
)


class SqlApiKeyRepository(TenantRows[ApiKey]):
    model = ApiKeyModel
    entity = ApiKey
    port = ApiKeyRepository

    async def add(
        self,
        *,
        user_id: UUID,
        name: str,
        prefix: str,
        key_hash: str,
        expires_at: datetime | None,
    ) -> ApiKey:
        row = await self.orm.add(
            ApiKeyModel(
                user_id=user_id, name=name, prefix=prefix, key_hash=key_hash, expires_at=expires_at
            )
        )
        return self.of_model(row)

    async def get_by_prefix(self, prefix: str) -> ApiKey | None:
        row = await self.orm.get_one_or_none(prefix=prefix)
        return None if row is None else self.of_model(row)

    async def list_for_user(self, user_id: UUID) -> list[ApiKey]:
        rows = await self.orm.get_many(
            OrderBy(field_name="created_at", sort_order="asc"), user_id=user_id, revoked_at=None
        )
        return [self.of_model(row) for row in rows]

    async def revoke(self, api_key_id: UUID, *, user_id: UUID, at: datetime) -> bool:
        statement = (
            self.update_rows()
            .where(
                ApiKeyModel.id == api_key_id,
                ApiKeyModel.user_id == user_id,
                ApiKeyModel.revoked_at.is_(None),
            )
            .values(revoked_at=at)
            .returning(ApiKeyModel.id)
        )
        return (await self.session.execute(statement)).first() is not None

    async def touch(self, api_key_id: UUID, at: datetime) -> None:
        statement = self.update_rows().where(ApiKeyModel.id == api_key_id).values(last_used_at=at)
        await self.session.execute(statement)

    def confirm_again_at_write(
        self, api_key_id: UUID, *, user_id: UUID, roles: tuple[Role, ...]
    ) -> None:
        values: dict[str, Any] = {
            "tenant_id": self.tenant_id,
            "api_key_id": api_key_id,
            "user_id": user_id,
            "roles": tuple(role.value for role in roles),
        }
        check = sql_literals(_CONFIRM_API_KEY, **values)
        check_later(self.session, check, refused=NOT_CONFIRMED)

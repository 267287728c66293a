"""API keys: stored as hashes behind a public prefix."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from advanced_alchemy.filters import OrderBy

from tenantry.domain.auth import ApiKey
from tenantry.infrastructure.db.models import ApiKeyModel
from tenantry.infrastructure.db.tenancy import TenantScopedRepository


class ApiKeyModelRepository(TenantScopedRepository[ApiKeyModel]):
    model_type = ApiKeyModel


def to_api_key(row: ApiKeyModel) -> ApiKey:
    return ApiKey(
        id=row.id,
        tenant_id=row.tenant_id,
        user_id=row.user_id,
        name=row.name,
        prefix=row.prefix,
        key_hash=row.key_hash,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


class SqlApiKeyRepository:
    def __init__(self, repository: ApiKeyModelRepository) -> None:
        self.repository = repository

    async def add(
        self,
        *,
        user_id: UUID,
        name: str,
        prefix: str,
        key_hash: str,
        expires_at: datetime | None,
    ) -> ApiKey:
        row = await self.repository.add(
            ApiKeyModel(
                user_id=user_id, name=name, prefix=prefix, key_hash=key_hash, expires_at=expires_at
            )
        )
        return to_api_key(row)

    async def get_by_prefix(self, prefix: str) -> ApiKey | None:
        row = await self.repository.get_one_or_none(prefix=prefix)
        return None if row is None else to_api_key(row)

    async def list_for_user(self, user_id: UUID) -> list[ApiKey]:
        rows = await self.repository.get_many(
            OrderBy(field_name="created_at", sort_order="asc"), user_id=user_id, revoked_at=None
        )
        return [to_api_key(row) for row in rows]

    async def revoke(self, api_key_id: UUID, *, user_id: UUID, at: datetime) -> bool:
        statement = (
            self.repository.update_rows()
            .where(
                ApiKeyModel.id == api_key_id,
                ApiKeyModel.user_id == user_id,
                ApiKeyModel.revoked_at.is_(None),
            )
            .values(revoked_at=at)
            .returning(ApiKeyModel.id)
        )
        return (await self.repository.session.execute(statement)).first() is not None

    async def touch(self, api_key_id: UUID, at: datetime) -> None:
        statement = (
            self.repository.update_rows()
            .where(ApiKeyModel.id == api_key_id)
            .values(last_used_at=at)
        )
        await self.repository.session.execute(statement)

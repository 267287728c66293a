"""API keys: the port of the keys a tenant's users create for programs."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol
from uuid import UUID

from tenantry.domain.auth import ApiKey


class ApiKeyRepository(Protocol):
    async def add(
        self,
        *,
        user_id: UUID,
        name: str,
        prefix: str,
        key_hash: str,
        expires_at: datetime | None,
    ) -> ApiKey: ...

    async def get_by_prefix(self, prefix: str) -> ApiKey | None: ...

    async def list_for_user(self, user_id: UUID) -> list[ApiKey]: ...

    async def revoke(self, api_key_id: UUID, *, user_id: UUID, at: datetime) -> bool: ...

    async def touch(self, api_key_id: UUID, at: datetime) -> None: ...

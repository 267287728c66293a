"""API keys: the port of the keys a tenant's users create for programs."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol
from uuid import UUID

from tenantry.domain.auth import ApiKey
from tenantry.domain.users import Role


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

    def confirm_again_at_write(
        self, api_key_id: UUID, *, user_id: UUID, roles: tuple[Role, ...]
    ) -> None:
        """Have a write that must not stand on the key's earlier read (an upload's row,
        written after its bytes) begin by confirming the key unrevoked and unexpired, ``roles``
        its user's, and the user and the tenant active; otherwise that write's transaction
        raises Unauthenticated before any statement of its own. Nothing is read now."""
        ...

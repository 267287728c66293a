"""API keys: long-lived credentials a user creates for scripts and integrations."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from tenantry.application.audit import record
from tenantry.domain.api_keys import ApiKeyRepository
from tenantry.domain.auth import Actor, ApiKey, IssuedApiKey, digest, new_api_key
from tenantry.domain.errors import Invalid, NotFound
from tenantry.domain.ports import Clock, UnitOfWork

NAME_MAX_LENGTH = 100


class CreateApiKey:
    def __init__(self, uow: UnitOfWork, clock: Clock) -> None:
        self.uow = uow
        self.clock = clock

    async def __call__(
        self, actor: Actor, *, name: str, expires_at: datetime | None
    ) -> IssuedApiKey:
        name = " ".join(name.split())
        problems = {}
        if not name or len(name) > NAME_MAX_LENGTH:
            problems["name"] = f"must be 1 to {NAME_MAX_LENGTH} characters"
        if expires_at is not None and (expires_at.tzinfo is None or expires_at <= self.clock.now()):
            problems["expires_at"] = "must be a future time with a time zone"
        if problems:
            raise Invalid("The API key is not valid.", fields=problems)
        key, prefix = new_api_key(actor.tenant_id)
        async with self.uow:
            stored = await self.uow.repository(ApiKeyRepository, actor.tenant_id).add(
                user_id=actor.user_id,
                name=name,
                prefix=prefix,
                key_hash=digest(key),
                expires_at=expires_at,
            )
            # The key and its hash are secrets: the trail names the key by its name only.
            await record(
                self.uow,
                actor,
                "api_key.created",
                ("api_key", stored.id),
                changes={
                    "after": {
                        "name": stored.name,
                        "expires_at": expires_at.isoformat() if expires_at else None,
                    }
                },
            )
            await self.uow.commit()
        return IssuedApiKey(api_key=stored, key=key)


class ListApiKeys:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, actor: Actor) -> list[ApiKey]:
        async with self.uow:
            return await self.uow.repository(ApiKeyRepository, actor.tenant_id).list_for_user(
                actor.user_id
            )


class RevokeApiKey:
    def __init__(self, uow: UnitOfWork, clock: Clock) -> None:
        self.uow = uow
        self.clock = clock

    async def __call__(self, actor: Actor, api_key_id: UUID) -> None:
        async with self.uow:
            revoked = await self.uow.repository(ApiKeyRepository, actor.tenant_id).revoke(
                api_key_id, user_id=actor.user_id, at=self.clock.now()
            )
            if not revoked:
                raise NotFound("No such API key.")
            await record(self.uow, actor, "api_key.revoked", ("api_key", api_key_id))
            await self.uow.commit()

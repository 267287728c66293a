"""API keys of the signed-in user: the key is shown once, at creation."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar
from uuid import UUID

import msgspec
from litestar import Controller, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from tenantry.application.api_keys import NAME_MAX_LENGTH, CreateApiKey, ListApiKeys, RevokeApiKey
from tenantry.domain.auth import Actor, IssuedApiKey
from tenantry.presentation.bodies import NOT_BLANK, StrictJSONBody
from tenantry.presentation.errors import BODY_ERRORS, PARAMETER_ERRORS, problems
from tenantry.presentation.pagination import Limit, Offset, Page, page
from tenantry.presentation.reads import Read
from tenantry.presentation.responses import NEW_RESOURCE, created
from tenantry.presentation.security import SIGNED_IN_ERRORS


class ApiKeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new API key: its name, and when it stops working (never when left out)."""

    example: ClassVar[dict[str, Any]] = {"name": "CI deploy"}

    name: Annotated[str, msgspec.Meta(max_length=NAME_MAX_LENGTH, pattern=NOT_BLANK)]
    expires_at: datetime | None = None


class ApiKeyRead(Read):
    """An API key as listed: never the key itself, only its first characters."""

    example: ClassVar[dict[str, Any]] = {"name": "CI deploy"}

    id: UUID
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreated(msgspec.Struct):
    """A new API key with its secret, the only time the secret is shown."""

    example: ClassVar[dict[str, Any]] = {
        "name": "CI deploy",
        "key": "tnt_5f0b3c1e8a2d4e6f9b7c1d2e3f4a5b6c8c1f0a7e2b3d_8Zr2Qm5Xw9Lk1Vp7Ty4Hn6Jc0Fs3GdAe5uBv7",
    }

    id: UUID
    name: str
    prefix: str
    key: str
    created_at: datetime
    expires_at: datetime | None

    @classmethod
    def of(cls, issued: IssuedApiKey) -> ApiKeyCreated:
        # By hand: two sources (the stored key, and the secret shown this once) in one body.
        key = issued.api_key
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            key=issued.key,
            created_at=key.created_at,
            expires_at=key.expires_at,
        )


class ApiKeyPage(Page[ApiKeyRead]):
    """A page of API keys."""

    items: list[ApiKeyRead]


class ApiKeyController(Controller):
    path = "/api/v1/auth/api-keys"
    tags = ["auth"]

    @post(
        response_headers=NEW_RESOURCE,
        summary="Create an API key; the key is in this response only",
        responses=problems(*SIGNED_IN_ERRORS, *BODY_ERRORS),
    )
    async def create_api_key(
        self,
        data: StrictJSONBody[ApiKeyCreate],
        actor: NamedDependency[Actor],
        create_api_key: NamedDependency[CreateApiKey],
    ) -> Response[ApiKeyCreated]:
        issued = await create_api_key(actor, name=data.name, expires_at=data.expires_at)
        return created(ApiKeyCreated.of(issued), f"{self.path}/{issued.api_key.id}")

    @get(
        summary="Your live API keys, without their secrets",
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS),
    )
    async def list_api_keys(
        self,
        actor: NamedDependency[Actor],
        list_api_keys: NamedDependency[ListApiKeys],
        limit: Limit = 20,
        offset: Offset = 0,
    ) -> ApiKeyPage:
        keys = await list_api_keys(actor)
        return page(ApiKeyPage, (keys[offset : offset + limit], len(keys)), limit, offset)

    @delete(
        "/{api_key_id:uuid}",
        summary="Revoke one of your API keys",
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 404),
    )
    async def revoke_api_key(
        self,
        api_key_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        revoke_api_key: NamedDependency[RevokeApiKey],
    ) -> None:
        await revoke_api_key(actor, api_key_id)

"""Platform administration of the JWT signing keyring (superusers)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

import msgspec
from litestar import Controller, Response, get, post
from litestar.di import NamedDependency

from tenantry.application.keys import ListSigningKeys, RotateSigningKey
from tenantry.domain.auth import Actor
from tenantry.domain.keys import KeyInfo
from tenantry.presentation.errors import problems
from tenantry.presentation.reads import Read
from tenantry.presentation.responses import NEW_RESOURCE, created
from tenantry.presentation.security import SIGNED_IN_ERRORS, requires_superuser


class SigningKeyRead(Read):
    """A signing key of the keyring, by its key id; the current one signs new tokens."""

    example: ClassVar[dict[str, Any]] = {"kid": "3f9a1c7e5b2d8046", "current": True}

    kid: str
    created_at: datetime
    current: bool


class KeyringRead(msgspec.Struct):
    """The keyring newest first; secrets are never part of any response."""

    example: ClassVar[dict[str, Any]] = {"current": "3f9a1c7e5b2d8046"}

    current: str
    keys: list[SigningKeyRead]

    @classmethod
    def of(cls, keys: list[KeyInfo]) -> KeyringRead:
        # Not a Read: ``current`` is derived from the list, whose keys alone are converted.
        return cls(
            current=next(key.kid for key in keys if key.current), keys=SigningKeyRead.each(keys)
        )


class AdminKeyController(Controller):
    path = "/api/v1/admin/keys"
    tags = ["platform administration"]
    guards = [requires_superuser]

    @get(
        operation_id="listSigningKeys",
        summary="The signing keys: the current one and those still trusted for verification",
        responses=problems(*SIGNED_IN_ERRORS, 403),
    )
    async def list_keys(
        self, actor: NamedDependency[Actor], list_signing_keys: NamedDependency[ListSigningKeys]
    ) -> KeyringRead:
        return KeyringRead.of(await list_signing_keys(actor))

    @post(
        "/rotate",
        response_headers=NEW_RESOURCE,
        operation_id="rotateSigningKeys",
        status_code=201,
        summary="Add a new current signing key; tokens signed before keep working until expiry",
        responses=problems(*SIGNED_IN_ERRORS, 403, 409),
    )
    async def rotate(
        self, actor: NamedDependency[Actor], rotate_signing_key: NamedDependency[RotateSigningKey]
    ) -> Response[KeyringRead]:
        return created(KeyringRead.of(await rotate_signing_key(actor)), self.path)

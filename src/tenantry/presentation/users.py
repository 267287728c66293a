"""Users of the caller's tenant: everyone may read, owners and admins may write."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

import msgspec
from litestar import Controller, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from tenantry.application.users import CreateUser, DeleteUser, GetUser, ListUsers, UpdateUser
from tenantry.domain.auth import Actor
from tenantry.domain.users import PASSWORD_MAX_LENGTH, Role
from tenantry.presentation.bodies import NO_NUL, StrictJSONBody
from tenantry.presentation.errors import BODY_ERRORS, PARAMETER_ERRORS, problems
from tenantry.presentation.pagination import Limit, Offset, Page, page
from tenantry.presentation.reads import Read
from tenantry.presentation.responses import NEW_RESOURCE, created
from tenantry.presentation.security import SIGNED_IN_ERRORS, requires_manager

Password = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
# A password being set; its other rules (length, strength) are the domain's, answered as 422.
NewPassword = Annotated[str, msgspec.Meta(min_length=1, max_length=PASSWORD_MAX_LENGTH)]
Email = Annotated[str, msgspec.Meta(max_length=254, pattern=NO_NUL)]
Roles = Annotated[list[Literal["owner", "admin", "member"]], msgspec.Meta(min_length=1)]


class UserRead(Read):
    """A user of the tenant: never the password or its hash."""

    id: UUID
    tenant_id: UUID
    username: str
    email: str
    roles: list[Role]
    settings: dict[str, Any]
    is_active: bool
    created_at: datetime
    last_login_at: datetime | None


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new user of the tenant, with the roles they get (member when left out)."""

    username: Annotated[str, msgspec.Meta(max_length=64, pattern=NO_NUL)]
    email: Email
    password: NewPassword
    roles: Roles = msgspec.field(default_factory=lambda: ["member"])


class UserUpdate(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The changes to a user: fields left out stay as they are."""

    example: ClassVar[dict[str, Any]] = {"roles": ["member"], "is_active": False}

    email: Email | None = None
    roles: Roles | None = None
    is_active: bool | None = None
    settings: dict[str, Any] | None = None


class UserPage(Page[UserRead]):
    """A page of users."""

    items: list[UserRead]


class UserController(Controller):
    path = "/api/v1/users"
    tags = ["users"]

    @get(
        summary="List the users of your tenant",
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS),
    )
    async def list_users(
        self,
        actor: NamedDependency[Actor],
        list_users: NamedDependency[ListUsers],
        limit: Limit = 20,
        offset: Offset = 0,
    ) -> UserPage:
        return page(UserPage, await list_users(actor, limit=limit, offset=offset), limit, offset)

    @post(
        response_headers=NEW_RESOURCE,
        summary="Add a user to your tenant (owners and admins)",
        guards=[requires_manager],
        responses=problems(*SIGNED_IN_ERRORS, *BODY_ERRORS, 403, 409),
    )
    async def create_user(
        self,
        data: StrictJSONBody[UserCreate],
        actor: NamedDependency[Actor],
        create_user: NamedDependency[CreateUser],
    ) -> Response[UserRead]:
        user = await create_user(
            actor,
            username=data.username,
            email=data.email,
            password=data.password,
            roles=list[str](data.roles),
        )
        return created(UserRead.of(user), f"{self.path}/{user.id}")

    @get(
        "/{user_id:uuid}",
        summary="A user of your tenant",
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 404),
    )
    async def get_user(
        self,
        user_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        get_user: NamedDependency[GetUser],
    ) -> UserRead:
        return UserRead.of(await get_user(actor, user_id))

    @patch(
        "/{user_id:uuid}",
        summary="Change a user (owners and admins; anyone their own email)",
        responses=problems(*SIGNED_IN_ERRORS, *BODY_ERRORS, 403, 404, 409),
    )
    async def update_user(
        self,
        user_id: FromPath[UUID],
        data: StrictJSONBody[UserUpdate],
        actor: NamedDependency[Actor],
        update_user: NamedDependency[UpdateUser],
    ) -> UserRead:
        user = await update_user(
            actor,
            user_id,
            email=data.email,
            roles=None if data.roles is None else list[str](data.roles),
            is_active=data.is_active,
            settings=data.settings,
        )
        return UserRead.of(user)

    @delete(
        "/{user_id:uuid}",
        summary="Remove a user (owners and admins)",
        guards=[requires_manager],
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 403, 404, 409),
    )
    async def delete_user(
        self,
        user_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        delete_user: NamedDependency[DeleteUser],
    ) -> None:
        await delete_user(actor, user_id)

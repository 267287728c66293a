"""Users of the caller's tenant: everyone may read, owners and admins may write."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from tenantry.application.users import CreateUser, DeleteUser, GetUser, ListUsers, UpdateUser
from tenantry.domain.auth import Actor
from tenantry.domain.users import User
from tenantry.presentation.pagination import Limit, Offset, Page
from tenantry.presentation.security import requires_manager

Password = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class UserRead(msgspec.Struct):
    id: UUID
    tenant_id: UUID
    username: str
    email: str
    roles: list[str]
    settings: dict[str, Any]
    is_active: bool
    created_at: datetime
    last_login_at: datetime | None

    @classmethod
    def of(cls, user: User) -> UserRead:
        return cls(
            id=user.id,
            tenant_id=user.tenant_id,
            username=user.username,
            email=user.email,
            roles=[role.value for role in user.roles],
            settings=user.settings,
            is_active=user.is_active,
            created_at=user.created_at,
            last_login_at=user.last_login_at,
        )


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(max_length=64)]
    email: Annotated[str, msgspec.Meta(max_length=254)]
    password: Password
    roles: list[str] = msgspec.field(default_factory=lambda: ["member"])


class UserUpdate(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    email: Annotated[str, msgspec.Meta(max_length=254)] | None = None
    roles: list[str] | None = None
    is_active: bool | None = None
    settings: dict[str, Any] | None = None


class UserController(Controller):
    path = "/api/v1/users"
    tags = ["users"]

    @get(summary="List the users of your tenant")
    async def list_users(
        self,
        actor: NamedDependency[Actor],
        list_users: NamedDependency[ListUsers],
        limit: Limit = 20,
        offset: Offset = 0,
    ) -> Page[UserRead]:
        users, total = await list_users(actor, limit=limit, offset=offset)
        return Page(items=[UserRead.of(u) for u in users], total=total, limit=limit, offset=offset)

    @post(summary="Add a user to your tenant (owners and admins)", guards=[requires_manager])
    async def create_user(
        self,
        data: JSONBody[UserCreate],
        actor: NamedDependency[Actor],
        create_user: NamedDependency[CreateUser],
    ) -> UserRead:
        user = await create_user(
            actor,
            username=data.username,
            email=data.email,
            password=data.password,
            roles=data.roles,
        )
        return UserRead.of(user)

    @get("/{user_id:uuid}", summary="A user of your tenant")
    async def get_user(
        self,
        user_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        get_user: NamedDependency[GetUser],
    ) -> UserRead:
        return UserRead.of(await get_user(actor, user_id))

    @patch("/{user_id:uuid}", summary="Change a user (owners and admins; anyone their own email)")
    async def update_user(
        self,
        user_id: FromPath[UUID],
        data: JSONBody[UserUpdate],
        actor: NamedDependency[Actor],
        update_user: NamedDependency[UpdateUser],
    ) -> UserRead:
        user = await update_user(
            actor,
            user_id,
            email=data.email,
            roles=data.roles,
            is_active=data.is_active,
            settings=data.settings,
        )
        return UserRead.of(user)

    @delete(
        "/{user_id:uuid}", summary="Remove a user (owners and admins)", guards=[requires_manager]
    )
    async def delete_user(
        self,
        user_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        delete_user: NamedDependency[DeleteUser],
    ) -> None:
        await delete_user(actor, user_id)

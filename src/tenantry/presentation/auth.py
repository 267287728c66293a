"""Sign-up, sign-in, token refresh, logout and the caller's own account."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency

from tenantry.application.auth import GetMe, Login, Logout, Refresh, Register
from tenantry.domain.auth import Actor
from tenantry.presentation.bodies import NO_NUL, StrictJSONBody
from tenantry.presentation.errors import BODY_ERRORS, problems
from tenantry.presentation.reads import Read
from tenantry.presentation.responses import NEW_RESOURCE, created
from tenantry.presentation.security import (
    NO_CREDENTIALS,
    PUBLIC,
    SIGNED_IN_ERRORS,
    client_address,
)
from tenantry.presentation.users import NewPassword, Password, UserRead

Short = Annotated[str, msgspec.Meta(max_length=254, pattern=NO_NUL)]
Slug = Annotated[str, msgspec.Meta(max_length=63, pattern=NO_NUL)]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class RegisterRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A sign-up to a tenant that allows self sign-up."""

    example: ClassVar[dict[str, Any]] = {"tenant": "acme"}

    tenant: Slug
    username: Annotated[str, msgspec.Meta(max_length=64, pattern=NO_NUL)]
    email: Short
    password: NewPassword


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A sign-in: the tenant's slug, a username or email, and the password."""

    example: ClassVar[dict[str, Any]] = {"tenant": "acme"}

    tenant: Slug
    login: Short
    password: Password


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The refresh token to trade for a new pair (it is used up)."""

    refresh_token: Token


class TokenResponse(Read):
    """A bearer access token, how many seconds it lasts, and the refresh token that renews it
    once."""

    access_token: str
    refresh_token: str
    expires_in: int
    token_type: Literal["bearer"] = "bearer"  # not in a TokenPair: always its default


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]

    @post(
        "/register",
        response_headers=NEW_RESOURCE,
        opt=PUBLIC,
        security=NO_CREDENTIALS,
        summary="Sign up in a tenant that allows self sign-up",
        responses=problems(*BODY_ERRORS, 403, 409, 429),
    )
    async def register(
        self,
        request: Request[Any, Any, Any],
        data: StrictJSONBody[RegisterRequest],
        register: NamedDependency[Register],
    ) -> Response[UserRead]:
        user = await register(
            tenant=data.tenant,
            username=data.username,
            email=data.email,
            password=data.password,
            client=client_address(request),
        )
        return created(UserRead.of(user), f"/api/v1/users/{user.id}")

    @post(
        "/login",
        opt=PUBLIC,
        security=NO_CREDENTIALS,
        status_code=200,
        summary="Sign in with email or username",
        responses=problems(*BODY_ERRORS, 401, 429),
    )
    async def login(
        self,
        request: Request[Any, Any, Any],
        data: StrictJSONBody[LoginRequest],
        sign_in: NamedDependency[Login],
    ) -> TokenResponse:
        pair = await sign_in(
            tenant=data.tenant,
            login=data.login,
            password=data.password,
            client=client_address(request),
        )
        return TokenResponse.of(pair)

    @post(
        "/refresh",
        operation_id="refreshTokens",
        opt=PUBLIC,
        security=NO_CREDENTIALS,
        status_code=200,
        summary="Trade a refresh token for new tokens",
        responses=problems(*BODY_ERRORS, 401),
    )
    async def refresh(
        self, data: StrictJSONBody[RefreshRequest], refresh: NamedDependency[Refresh]
    ) -> TokenResponse:
        return TokenResponse.of(await refresh(data.refresh_token))

    @post(
        "/logout",
        opt=PUBLIC,
        security=NO_CREDENTIALS,
        status_code=204,
        summary="Revoke a refresh token's family",
        responses=problems(*BODY_ERRORS),
    )
    async def logout(
        self, data: StrictJSONBody[RefreshRequest], logout: NamedDependency[Logout]
    ) -> None:
        await logout(data.refresh_token)

    @get(
        "/me",
        operation_id="getMe",
        summary="The signed-in user",
        responses=problems(*SIGNED_IN_ERRORS),
    )
    async def me(self, actor: NamedDependency[Actor], get_me: NamedDependency[GetMe]) -> UserRead:
        return UserRead.of(await get_me(actor))

"""Sign-up, sign-in, token refresh, logout and the caller's own account."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from tenantry.application.auth import GetMe, Login, Logout, Refresh, Register
from tenantry.domain.auth import Actor, TokenPair
from tenantry.presentation.security import NO_CREDENTIALS, PUBLIC
from tenantry.presentation.users import Password, UserRead

Short = Annotated[str, msgspec.Meta(max_length=254)]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class RegisterRequest(msgspec.Struct, forbid_unknown_fields=True):
    tenant: Annotated[str, msgspec.Meta(max_length=63)]
    username: Annotated[str, msgspec.Meta(max_length=64)]
    email: Short
    password: Password


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    tenant: Annotated[str, msgspec.Meta(max_length=63)]
    login: Short
    password: Password


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: Token


class TokenResponse(msgspec.Struct):
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: Literal["bearer"] = "bearer"

    @classmethod
    def of(cls, pair: TokenPair) -> TokenResponse:
        return cls(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            expires_in=pair.expires_in,
        )


def client_address(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]

    @post(
        "/register",
        opt=PUBLIC,
        security=NO_CREDENTIALS,
        summary="Sign up in a tenant that allows self sign-up",
    )
    async def register(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[RegisterRequest],
        register: NamedDependency[Register],
    ) -> UserRead:
        user = await register(
            tenant=data.tenant,
            username=data.username,
            email=data.email,
            password=data.password,
            client=client_address(request),
        )
        return UserRead.of(user)

    @post(
        "/login",
        opt=PUBLIC,
        security=NO_CREDENTIALS,
        status_code=200,
        summary="Sign in with email or username",
    )
    async def login(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[LoginRequest],
        login: NamedDependency[Login],
    ) -> TokenResponse:
        pair = await login(
            tenant=data.tenant,
            login=data.login,
            password=data.password,
            client=client_address(request),
        )
        return TokenResponse.of(pair)

    @post(
        "/refresh",
        opt=PUBLIC,
        security=NO_CREDENTIALS,
        status_code=200,
        summary="Trade a refresh token for new tokens",
    )
    async def refresh(
        self, data: JSONBody[RefreshRequest], refresh: NamedDependency[Refresh]
    ) -> TokenResponse:
        return TokenResponse.of(await refresh(data.refresh_token))

    @post(
        "/logout",
        opt=PUBLIC,
        security=NO_CREDENTIALS,
        status_code=204,
        summary="Revoke a refresh token's family",
    )
    async def logout(self, data: JSONBody[RefreshRequest], logout: NamedDependency[Logout]) -> None:
        await logout(data.refresh_token)

    @get("/me", summary="The signed-in user")
    async def me(self, actor: NamedDependency[Actor], get_me: NamedDependency[GetMe]) -> UserRead:
        return UserRead.of(await get_me(actor))

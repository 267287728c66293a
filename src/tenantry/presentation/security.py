"""Authentication (bearer JWT or X-API-Key) as Litestar middleware, authorization as guards."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import structlog
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.authentication import (
    AbstractAuthenticationMiddleware,
    AuthenticationResult,
)
from litestar.types import ASGIApp, Scope

from tenantry.domain.auth import Actor
from tenantry.domain.errors import Unauthenticated

MISSING_CREDENTIALS = "Authentication required: send a bearer token or an X-API-Key header."


class Authenticator(Protocol):
    async def bearer(self, token: str) -> Actor: ...

    async def api_key(self, key: str) -> Actor: ...


AuthenticatorFactory = Callable[[Scope], Authenticator]


class CredentialsMiddleware(AbstractAuthenticationMiddleware):
    """Resolves the credential into an Actor; handlers marked ``exclude_from_auth`` are public."""

    def __init__(
        self, app: ASGIApp, *, authenticator: AuthenticatorFactory, exclude: list[str]
    ) -> None:
        super().__init__(app, exclude=exclude)
        self.authenticator = authenticator

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        authorization = connection.headers.get("authorization")
        api_key = connection.headers.get("x-api-key")
        authenticator = self.authenticator(connection.scope)
        try:
            if authorization is not None:
                scheme, _, token = authorization.partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    raise Unauthenticated("Invalid or expired credentials.")
                actor, kind = await authenticator.bearer(token.strip()), "bearer"
            elif api_key is not None:
                actor, kind = await authenticator.api_key(api_key.strip()), "api_key"
            else:
                raise NotAuthorizedException(MISSING_CREDENTIALS, headers=CHALLENGE)
        except Unauthenticated as error:
            raise NotAuthorizedException(error.detail, headers=CHALLENGE) from None
        structlog.contextvars.bind_contextvars(
            tenant_id=str(actor.tenant_id), user_id=str(actor.user_id)
        )
        return AuthenticationResult(user=actor, auth=kind)


CHALLENGE = {"WWW-Authenticate": 'Bearer realm="tenantry"'}


def provide_actor(request: Request[Actor, Any, Any]) -> Actor:
    return request.user


def requires_manager(connection: ASGIConnection[Any, Actor, Any, Any], _: BaseRouteHandler) -> None:
    if not connection.user.can_manage:
        raise PermissionDeniedException("Only the tenant's owners and admins may do this.")


def requires_superuser(
    connection: ASGIConnection[Any, Actor, Any, Any], _: BaseRouteHandler
) -> None:
    if not connection.user.is_superuser:
        raise PermissionDeniedException("Only platform superusers may do this.")


# Handler options of public endpoints: skipped by the middleware, shown without a lock in /docs.
PUBLIC = {"exclude_from_auth": True}
NO_CREDENTIALS: list[dict[str, list[str]]] = [{}]

"""Authentication (bearer JWT or X-API-Key) as Litestar middleware, authorization as guards."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.handlers import HTTPRouteHandler
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.authentication import (
    AbstractAuthenticationMiddleware,
    AuthenticationResult,
)
from litestar.types import ASGIApp, Receive, Scope, Send

from tenantry.domain.auth import Actor
from tenantry.domain.errors import Unauthenticated
from tenantry.presentation.bodies import read_as_json

if TYPE_CHECKING:
    # The middleware module imports this one's dependents: at run time the name is not needed.
    from tenantry.presentation.middleware import RequestUsage

MISSING_CREDENTIALS = "Authentication required: send a bearer token or an X-API-Key header."
TWO_CREDENTIALS = "Send one credential: a bearer token or an X-API-Key header, not both."
# All headers together, bounded as a proxy bounds them (nginx: 4 x 8 KiB by default): far above
# any real request to this API, and uvicorn alone takes whatever one read brings (~256 KiB).
MAX_HEADER_BYTES = 32 * 1024


class Authenticator(Protocol):
    async def bearer(self, token: str, *, streamed: bool = False) -> Actor: ...

    async def api_key(self, key: str, *, client: str, streamed: bool = False) -> Actor: ...


AuthenticatorFactory = Callable[[Scope], Authenticator]


def client_address(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The peer's address, which rate limits are kept by."""
    return connection.client.host if connection.client else "unknown"


class CredentialsMiddleware(AbstractAuthenticationMiddleware):
    """Resolves the credential into an Actor; handlers marked ``exclude_from_auth`` are public."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: AuthenticatorFactory,
        exclude: list[str],
        usage: RequestUsage | None = None,
    ) -> None:
        """``usage``: where each authenticated request is held to its tenant's daily limits."""
        super().__init__(app, exclude=exclude)
        self.authenticator = authenticator
        self.usage = usage

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        size, body, content_type = 0, False, b""
        for name, value in scope["headers"]:
            size += len(name) + len(value)
            if name == b"content-length":
                body = value != b"0"
            elif name == b"transfer-encoding":
                body = True
            elif name == b"content-type":
                content_type = value
        # Refused before any credential in them is parsed; every routed request passes here.
        if size > MAX_HEADER_BYTES:
            raise HTTPException(status_code=431, detail="The request's headers are too large.")
        # The credentials' read begins the request's transaction, which its use case goes on
        # with. No pooled connection may wait on a client's bytes in between: a JSON body,
        # bounded by its route's limit, is received first and kept for the handler. Any other
        # (an upload's stream, a body the route will refuse unread) comes after a read that
        # ended its transaction (see bearer).
        if body:
            media_type = content_type.split(b";", 1)[0].strip().lower().decode("latin-1")
            if read_as_json(media_type) and _bounded(scope["route_handler"]):
                await Request[Any, Any, Any](scope, receive).body()
            else:
                scope.setdefault("state", {})[BODY_TO_COME] = True
        await super().__call__(scope, receive, send)

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        authorization = connection.headers.get("authorization")
        api_key = connection.headers.get("x-api-key")
        authenticator = self.authenticator(connection.scope)
        streamed = bool(connection.scope.get("state", {}).get(BODY_TO_COME))
        try:
            if authorization is not None and api_key is not None:
                # One credential per request: an invalid one must not hide behind a valid one.
                raise Unauthenticated(TWO_CREDENTIALS)
            if authorization is not None:
                scheme, _, token = authorization.partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    raise Unauthenticated("Invalid or expired credentials.")
                actor = await authenticator.bearer(token.strip(), streamed=streamed)
                kind = "bearer"
            elif api_key is not None:
                actor = await authenticator.api_key(
                    api_key.strip(), client=client_address(connection), streamed=streamed
                )
                kind = "api_key"
            else:
                raise NotAuthorizedException(MISSING_CREDENTIALS, headers=CHALLENGE)
        except Unauthenticated as error:
            raise NotAuthorizedException(error.detail, headers=CHALLENGE) from None
        structlog.contextvars.bind_contextvars(
            tenant_id=str(actor.tenant_id), user_id=str(actor.user_id)
        )
        if self.usage is not None:
            route = connection.scope.get("path_template")
            self.usage.check(actor, str(connection.scope.get("method", "GET")), route)
        return AuthenticationResult(user=actor, auth=kind)


CHALLENGE = {"WWW-Authenticate": 'Bearer realm="tenantry"'}
# Set in the request's state when its body is still to be received once it is authenticated.
BODY_TO_COME = "tenantry.body_to_come"


def _bounded(handler: object) -> bool:
    """Whether the route limits its body's size (the upload route does not)."""
    return isinstance(handler, HTTPRouteHandler) and bool(handler.resolve_request_max_body_size())


def provide_actor(request: Request[Actor, Any, Any]) -> Actor:
    return request.user


def automatic_options(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """Litestar's own OPTIONS answer (all it tells is the allowed methods) skips the credentials
    middleware, as CORS preflights carry none, yet runs a controller's guards."""
    return connection.scope.get("method") == "OPTIONS"


def requires_manager(connection: ASGIConnection[Any, Actor, Any, Any], _: BaseRouteHandler) -> None:
    if automatic_options(connection):
        return
    if not connection.user.can_manage:
        raise PermissionDeniedException("Only the tenant's owners and admins may do this.")


def requires_superuser(
    connection: ASGIConnection[Any, Actor, Any, Any], _: BaseRouteHandler
) -> None:
    if automatic_options(connection):
        return
    if not connection.user.is_superuser:
        raise PermissionDeniedException("Only platform superusers may do this.")


# What any route behind the credentials middleware may answer before its handler runs: no or
# bad credentials, or too many failed API keys from the caller's address.
SIGNED_IN_ERRORS = (401, 429)

# Handler options of public endpoints: skipped by the middleware, shown without a lock in /docs.
PUBLIC = {"exclude_from_auth": True}
NO_CREDENTIALS: list[dict[str, list[str]]] = [{}]

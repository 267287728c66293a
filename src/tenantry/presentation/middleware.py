"""The outermost ASGI layer: request id, logging context, access line, security headers, and
every method of a path in the Allow of its OPTIONS answer.

It wraps Litestar's whole handler (router and exception handling included) because Litestar's
own middleware runs per route and so never sees a 404 or 405 from routing.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable, Mapping

import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_STATE_KEY = "request_id"
_WELL_FORMED_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

access_log = structlog.stdlib.get_logger("tenantry.access")

API_SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (
        b"content-security-policy",
        b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    ),
)
# Swagger UI loads its script and styles from a CDN and runs an inline bootstrap script.
DOCS_CONTENT_SECURITY_POLICY = (
    b"default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    b"style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https:; "
    b"connect-src 'self'; font-src 'self' https://cdn.jsdelivr.net; "
    b"frame-ancestors 'none'; base-uri 'none'"
)
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


def accepted_request_id(value: str | None) -> str:
    """The client's id when it is well formed, a fresh one otherwise."""
    if value is not None and _WELL_FORMED_REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


def request_id_of(scope: Scope) -> str:
    """The id of the request in ``scope``, as chosen by :class:`RequestContextMiddleware`."""
    return str(scope.get("state", {}).get(REQUEST_ID_STATE_KEY, ""))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _security_headers(path: str, docs_path: str, production: bool) -> Iterable[tuple[bytes, bytes]]:
    for name, value in API_SECURITY_HEADERS:
        if name == b"content-security-policy" and path.startswith(docs_path):
            yield name, DOCS_CONTENT_SECURITY_POLICY
        else:
            yield name, value
    if production:
        yield HSTS


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        docs_path: str,
        production: bool,
        allowed_methods: Mapping[str, bytes] | None = None,
    ) -> None:
        """``allowed_methods`` maps a route's path template to its Allow header value."""
        self.app = app
        self.docs_path = docs_path
        self.production = production
        self.allowed_methods = allowed_methods or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        request_id = accepted_request_id(_header(scope, b"x-request-id"))
        scope.setdefault("state", {})[REQUEST_ID_STATE_KEY] = request_id
        status = 500
        path = scope["path"]
        options = scope["method"] == "OPTIONS"
        extra_headers = [
            (b"x-request-id", request_id.encode()),
            *_security_headers(path, self.docs_path, self.production),
        ]

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", ())
                # Litestar 2's automatic OPTIONS answer lists only the methods of the first
                # handler registered on the path (litestar#4169, fixed in Litestar 3).
                if options and (allow := self.allowed_methods.get(scope.get("path_template", ""))):
                    headers = [
                        (name, allow if name.lower() == b"allow" else value)
                        for name, value in headers
                    ]
                present = {name.lower() for name, _ in headers}
                message["headers"] = [
                    *headers,
                    *(header for header in extra_headers if header[0] not in present),
                ]
            await send(message)

        # Auth binds tenant_id and user_id later in this same context; clearing at both ends
        # keeps one request's identity out of the next request's lines.
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            access_log.info(
                "request",
                method=scope["method"],
                path=path,
                route=scope.get("path_template") or None,
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                client=client[0] if (client := scope.get("client")) else None,
            )
            structlog.contextvars.clear_contextvars()

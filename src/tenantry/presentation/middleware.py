"""The outermost ASGI layer, one for everything each request gets: request id, logging
context, access line, request metrics, security headers, every method of a path in the Allow
of its OPTIONS answer, and a note of a client that went away mid-body.

It wraps Litestar's whole handler (router and exception handling included) because Litestar's
own middleware runs per route and so never sees a 404 or 405 from routing. One layer rather than
one per concern: every request pays each layer's call, closure and header walk.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from typing import Any, Protocol

import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from tenantry.application.audit import ORIGIN, Origin
from tenantry.domain.auth import Actor
from tenantry.presentation.metrics import (
    KNOWN_METHODS,
    METRICS_PATH,
    OTHER_METHOD,
    UNMATCHED,
    RequestMetrics,
)

REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_STATE_KEY = "request_id"
# Set in the request's state once the server says its client went away.
CLIENT_GONE_STATE_KEY = "client_gone"
_WELL_FORMED_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class AccessLog(Protocol):
    """Where each request's access line goes: its fields, to be written as logger
    ``tenantry.access``'s ``request`` line at INFO."""

    def write(self, fields: dict[str, Any]) -> None: ...


class RequestUsage(Protocol):
    """Where each signed-in request is held to its tenant's daily limits, and counted, for
    usage metering (presentation/usage.py)."""

    def check(self, actor: Actor, method: str, route: str | None) -> None:
        """Raise UsageLimitReached when the request would go past one of the limits."""
        ...

    def request(self, actor: Actor, method: str, route: str | None) -> None: ...


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
# The docs page loads everything from the app itself (presentation/docs.py). Swagger UI sets
# style attributes and draws its icons as data: images.
DOCS_CONTENT_SECURITY_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data:; connect-src 'self'; font-src 'self'; "
    b"frame-ancestors 'none'; base-uri 'none'"
)
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


def accepted_request_id(value: str | None) -> str:
    """The client's id when it is well formed, a fresh one otherwise."""
    if value is not None and _WELL_FORMED_REQUEST_ID.fullmatch(value):
        return value
    # 128 random bits in hex, as a uuid4's hex but without building a UUID.
    return os.urandom(16).hex()


def request_id_of(scope: Scope) -> str:
    """The id of the request in ``scope``, as chosen by :class:`RequestContextMiddleware`."""
    return str(scope.get("state", {}).get(REQUEST_ID_STATE_KEY, ""))


def client_gone(scope: Scope) -> bool:
    """Whether the client of the request in ``scope`` went away before its body was whole."""
    return bool(scope.get("state", {}).get(CLIENT_GONE_STATE_KEY))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def security_headers(*, docs: bool, production: bool) -> tuple[tuple[bytes, bytes], ...]:
    """The headers every response gets, on the API's paths or on the docs'."""
    headers = tuple(
        (
            name,
            DOCS_CONTENT_SECURITY_POLICY if docs and name == b"content-security-policy" else value,
        )
        for name, value in API_SECURITY_HEADERS
    )
    return (*headers, HSTS) if production else headers


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        access_log: AccessLog,
        docs_path: str,
        production: bool,
        metrics: RequestMetrics | None = None,
        usage: RequestUsage | None = None,
        allowed_methods: Mapping[str, bytes] | None = None,
    ) -> None:
        """``allowed_methods`` maps a route's path template to its Allow header value."""
        self.app = app
        self.docs_path = docs_path
        self.metrics = metrics
        self.usage = usage
        self.allowed_methods = allowed_methods or {}
        # Built once: a response's extra headers are these plus its request id.
        self.api_headers = security_headers(docs=False, production=production)
        self.docs_headers = security_headers(docs=True, production=production)
        self.added = frozenset(name for name, _ in (*self.api_headers, (b"x-request-id", b"")))
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        request_id = accepted_request_id(_header(scope, b"x-request-id"))
        state = scope.setdefault("state", {})
        state[REQUEST_ID_STATE_KEY] = request_id
        path: str = scope["path"]
        method: str = scope["method"]
        status = 500  # what the server answers when the app raises before responding
        extra_headers = (
            (b"x-request-id", request_id.encode()),
            *(self.docs_headers if path.startswith(self.docs_path) else self.api_headers),
        )

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                # Litestar 2's automatic OPTIONS answer lists only the methods of the first
                # handler registered on the path (litestar#4169, fixed in Litestar 3).
                if method == "OPTIONS" and (
                    allow := self.allowed_methods.get(scope.get("path_template", ""))
                ):
                    headers = [
                        (name, allow if name.lower() == b"allow" else value)
                        for name, value in headers
                    ]
                # A header the app set itself wins over ours (Litestar writes names in lower case).
                present = {name for name, _ in headers}
                if present.isdisjoint(self.added):
                    headers.extend(extra_headers)
                else:
                    headers.extend(header for header in extra_headers if header[0] not in present)
                message["headers"] = headers
            await send(message)

        async def receive_noting_disconnect() -> ReceiveMessage:
            # Litestar reports a body cut off by its client as a server error (a 500); the
            # error handlers tell it apart by this.
            message = await receive()
            if message["type"] == "http.disconnect":
                state[CLIENT_GONE_STATE_KEY] = True
            return message

        # Scrapes are not counted: a scrape would count itself.
        metrics = self.metrics if path != METRICS_PATH else None
        metric_method = method if method in KNOWN_METHODS else OTHER_METHOD
        if metrics is not None:
            metrics.started(metric_method)
        # Auth binds tenant_id and user_id later in this context. A server runs each request in a
        # task of its own, whose context ends with it; a test client runs them all in one, so
        # what the last request bound is cleared here.
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        client = scope.get("client")
        client_host = client[0] if client else None
        # What the audit trail records of where a change came from.
        ORIGIN.set(Origin(request_id=request_id, client=client_host))
        try:
            await self.app(scope, receive_noting_disconnect, send_with_headers)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template")
            if metrics is not None:
                metrics.finished(metric_method, route or UNMATCHED, status, elapsed)
            line = {
                "method": method,
                "path": path,
                "route": route or None,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "client": client_host,
                "request_id": request_id,
            }
            # Who asked, as every line of the request has it (see CredentialsMiddleware).
            if isinstance(actor := scope.get("user"), Actor):
                line["tenant_id"] = str(actor.tenant_id)
                line["user_id"] = str(actor.user_id)
                if self.usage is not None:
                    self.usage.request(actor, method, route)
            self.access_log.write(line)

"""Request metrics: a pure ASGI middleware that counts and times every request by route
template, and ``GET /metrics`` for Prometheus. What records and renders the series comes from
bootstrap (:class:`RequestMetrics`), so this module knows HTTP and Litestar, not Prometheus.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from tenantry.presentation.security import NO_CREDENTIALS, PUBLIC

METRICS_PATH = "/metrics"
# Routing failures (404, 405) have no route; one label keeps scanners from minting series.
UNMATCHED = "<unmatched>"
# Any other method is one label too, for the same reason.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"


# Runtime-checkable: Litestar checks the type of every dependency it injects.
@runtime_checkable
class RequestMetrics(Protocol):
    def started(self, method: str) -> None: ...

    def finished(self, method: str, route: str, status: int, seconds: float) -> None: ...

    def scrape(self) -> tuple[bytes, str]:
        """The body and content type of a scrape."""
        ...


class MetricsMiddleware:
    """Wraps Litestar's whole handler, like RequestContextMiddleware, so routing 404s and 405s
    are counted too. The route is the template Litestar matched (``scope["path_template"]``),
    never the raw path: one series per route, whatever ids the paths carry."""

    def __init__(self, app: ASGIApp, *, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["path"] == METRICS_PATH:
            await self.app(scope, receive, send)
            return

        method: str = scope["method"]
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD
        status = 500  # what the server answers when the app raises before responding

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.started(method)
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.finished(
                method,
                scope.get("path_template") or UNMATCHED,
                status,
                time.perf_counter() - started,
            )


class MetricsController(Controller):
    @get(
        METRICS_PATH,
        opt=PUBLIC,
        security=NO_CREDENTIALS,
        include_in_schema=False,
        sync_to_thread=False,
    )
    def metrics(self, request_metrics: NamedDependency[RequestMetrics]) -> Response[bytes]:
        body, content_type = request_metrics.scrape()
        # As a header, not a media type: Litestar would add a second charset to a text/ one.
        return Response(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})

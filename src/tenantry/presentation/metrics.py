"""Request metrics: the labels the request middleware counts and times every request by (its
method and route template), and ``GET /metrics`` for Prometheus. What records and renders the
series comes from bootstrap (:class:`RequestMetrics`), so this module knows HTTP and Litestar,
not Prometheus.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from litestar import Controller, Response, get
from litestar.di import NamedDependency

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

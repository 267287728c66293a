"""The request middleware alone: µs per request in this process, without HTTP or a network.

Usage: ``uv run python bench/middleware.py [--requests 20000] [--rounds 5]``

Times a no-op ASGI endpoint bare, then wrapped in the product's ``RequestContextMiddleware``
(its access line in JSON, written to /dev/null with its flush, as a line to stdout would be),
then with the Prometheus metrics too, and the access line alone (what the middleware writes of a request,
given a request's fields). The rounds alternate the variants; medians are printed. The
differences are what each part adds to every request the API answers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import create_async_engine

from tenantry.config import load_settings
from tenantry.infrastructure.observability.logging import AccessLines, configure_logging
from tenantry.infrastructure.observability.metrics import PrometheusRequestMetrics
from tenantry.presentation.middleware import RequestContextMiddleware

App = Callable[..., Any]


async def endpoint(scope: dict[str, Any], _receive: Any, send: Any) -> None:
    scope["path_template"] = "/health"  # what Litestar's router leaves in the scope
    headers = [(b"content-type", b"application/json"), (b"content-length", b"15")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b'{"status":"ok"}'})


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(_message: dict[str, Any]) -> None:
    return None


def variants() -> dict[str, App]:
    """Each variant's app, built after logging is configured as it needs."""
    sink = open(os.devnull, "wb")  # noqa: SIM115 - the log lines' stream, for the whole run
    settings = load_settings(environ={"TENANTRY_LOG_JSON": "true"}, env_file=None)
    configure_logging(settings, sink)
    access_log = AccessLines(settings)
    middleware = RequestContextMiddleware(
        endpoint, access_log=access_log, docs_path="/docs", production=True
    )

    async def access_line(scope: dict[str, Any], _receive: Any, _send: Any) -> None:
        access_log.write(
            {
                "method": scope["method"],
                "path": scope["path"],
                "route": "/health",
                "status": 200,
                "duration_ms": 0.42,
                "client": scope["client"][0],
                "request_id": "0123456789abcdef0123456789abcdef",
            }
        )

    engine = create_async_engine("postgresql+asyncpg://bench@127.0.0.1:1/none")  # never connects
    return {
        "bare endpoint": endpoint,
        "access line alone": access_line,
        "middleware": middleware,
        "middleware and metrics": RequestContextMiddleware(
            endpoint,
            access_log=access_log,
            docs_path="/docs",
            production=True,
            metrics=PrometheusRequestMetrics(engine),
        ),
    }


async def timed(app: App, requests: int) -> float:
    started = time.perf_counter()
    for _ in range(requests):
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/health",
            "headers": [(b"host", b"127.0.0.1")],
            "client": ("127.0.0.1", 50000),
        }
        await app(scope, receive, send)
    return (time.perf_counter() - started) / requests * 1e6


async def measure(requests: int, rounds: int) -> dict[str, float]:
    apps = variants()
    timings: dict[str, list[float]] = {name: [] for name in apps}
    for round_number in range(rounds + 1):
        order = list(apps.items()) if round_number % 2 else list(apps.items())[::-1]
        for name, app in order:
            us = await timed(app, requests)
            if round_number:  # the first round warms up
                timings[name].append(us)
    return {name: statistics.median(values) for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds")
    args = parser.parse_args()
    medians = asyncio.run(measure(args.requests, args.rounds))
    bare = medians["bare endpoint"]
    for name, us in medians.items():
        print(f"{name:28} {us:7.2f} µs per request, {us - bare:7.2f} over the bare endpoint")


if __name__ == "__main__":
    main()

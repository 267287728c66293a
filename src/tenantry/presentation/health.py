"""Service endpoints: liveness, readiness with dependency checks, and build information."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, Literal

import msgspec
import structlog
from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec

from tenantry.presentation.security import NO_CREDENTIALS, PUBLIC

Check = Callable[[], Awaitable[object]]
ReadinessChecks = Mapping[str, Check]
CheckStatus = Literal["ok", "error"]

log = structlog.stdlib.get_logger("tenantry.health")


class Health(msgspec.Struct):
    """The process is up."""

    status: Literal["ok"] = "ok"


class CheckResult(msgspec.Struct, omit_defaults=True):
    """One dependency's readiness: ok or error, and how long the check took."""

    example: ClassVar[dict[str, Any]] = {"status": "error", "error": "connection refused"}

    status: CheckStatus
    latency_ms: float
    error: str | None = None


class Readiness(msgspec.Struct):
    """Whether every dependency answers, and each one's check."""

    example: ClassVar[dict[str, Any]] = {
        "checks": {
            "database": {"status": "ok", "latency_ms": 1.8},
            "redis": {"status": "ok", "latency_ms": 0.4},
        }
    }

    status: CheckStatus
    checks: dict[str, CheckResult]


class Info(msgspec.Struct):
    """The service's name, version and environment."""

    example: ClassVar[dict[str, Any]] = {
        "name": "Tenantry",
        "version": "0.1.0",
        "environment": "production",
    }

    name: str
    version: str
    environment: str


class ServiceInfo(msgspec.Struct, frozen=True):
    """What /api/v1/info reports and how long each readiness check may take."""

    name: str
    version: str
    environment: str
    check_timeout: float


def _forget(task: asyncio.Task[object]) -> None:
    if not task.cancelled():
        task.exception()


async def run_check(name: str, check: Check, limit_s: float) -> CheckResult:
    started = time.perf_counter()
    task = asyncio.ensure_future(check())
    # asyncio.wait, not wait_for: a dependency that ignores cancellation must not hold /ready.
    done, _ = await asyncio.wait({task}, timeout=limit_s)
    latency = round((time.perf_counter() - started) * 1000, 2)
    if not done:
        task.cancel()
        task.add_done_callback(_forget)
        log.warning("readiness check timed out", check=name, limit_s=limit_s)
        return CheckResult(status="error", latency_ms=latency, error="timeout")
    if (exc := task.exception()) is not None:
        log.warning("readiness check failed", check=name, error=type(exc).__name__)
        return CheckResult(status="error", latency_ms=latency, error=type(exc).__name__)
    return CheckResult(status="ok", latency_ms=latency)


class HealthController(Controller):
    tags = ["service"]

    @get(
        "/health",
        operation_id="getHealth",
        opt=PUBLIC,
        security=NO_CREDENTIALS,
        summary="Liveness: 200 while the process lives",
    )
    async def health(self) -> Health:
        return Health()

    @get(
        "/ready",
        operation_id="getReadiness",
        opt=PUBLIC,
        security=NO_CREDENTIALS,
        summary="Readiness: 200 when every dependency answers, else 503",
        responses={
            503: ResponseSpec(
                Readiness, description="A dependency failed its check", generate_examples=False
            )
        },
    )
    async def ready(
        self,
        readiness_checks: NamedDependency[ReadinessChecks],
        service_info: NamedDependency[ServiceInfo],
    ) -> Response[Readiness]:
        names = list(readiness_checks)
        results = await asyncio.gather(
            *(run_check(n, readiness_checks[n], service_info.check_timeout) for n in names)
        )
        checks = dict(zip(names, results, strict=True))
        healthy = all(result.status == "ok" for result in results)
        return Response(
            Readiness(status="ok" if healthy else "error", checks=checks),
            status_code=200 if healthy else 503,
            headers={"Cache-Control": "no-store"},
        )

    @get(
        "/api/v1/info",
        operation_id="getInfo",
        opt=PUBLIC,
        security=NO_CREDENTIALS,
        summary="Name, version and environment of this deployment",
    )
    async def info(self, service_info: NamedDependency[ServiceInfo]) -> Info:
        return Info(
            name=service_info.name,
            version=service_info.version,
            environment=service_info.environment,
        )

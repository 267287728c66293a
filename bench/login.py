"""Login benchmark: logins/s and /health latency of the real product, idle and under login load.

Starts `tenantry dev` (embedded PostgreSQL and Redis, fresh data directory, free loopback port),
measures sign-in throughput from concurrent clients and /health latency beside it, and compares
the login rate with argon2 hashing called directly in a thread pool. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from argon2 import PasswordHasher
from common import (
    HOST,
    REQUEST_TIMEOUT_S,
    RESULTS_DIR,
    BenchError,
    CpuMeter,
    background_load,
    bench_main,
    cell,
    describe_machine,
    free_port,
    percentile,
    product_environment,
    ratio,
    running,
    tenantry,
    until,
    wait_ready,
)

from tenantry.config import Settings, SettingsError, load_settings

TENANT = {
    "name": "Bench",
    "slug": "bench",
    "owner": {
        "username": "bench",
        "email": "bench@bench.example",
        "password": "correct horse battery 9",
    },
}
LOGIN = {"tenant": "bench", "login": "bench@bench.example", "password": "correct horse battery 9"}
PASSWORD_PREFIX = "TENANTRY_PASSWORD_"
# The health prober waits this long between requests so it observes the event loop rather
# than loading it; the idle and loaded phases use the same pace.
PROBE_GAP_S = 0.01


@dataclass
class Sample:
    """Latencies of the successful requests (or hashes) of one phase, and the failures."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    # The first response body or exception of each kind of error, to report it as seen.
    examples: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def fail(self, kind: str, example: str) -> None:
        self.errors[kind] += 1
        self.examples.setdefault(kind, example[:500])

    def summary(self, cpu_busy_pct: float | None) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)
        return {
            "count": len(ordered),
            "elapsed_s": round(self.elapsed_s, 3),
            "per_second": len(ordered) / self.elapsed_s if self.elapsed_s else None,
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "error_examples": self.examples,
            "p50_ms": percentile(ordered, 50),
            "p95_ms": percentile(ordered, 95),
            "p99_ms": percentile(ordered, 99),
            "max_ms": ordered[-1] if ordered else None,
            "cpu_busy_pct": cpu_busy_pct,
        }


# ---------------------------------------------------------------------------------------------
# Configuration and machine


def password_settings() -> tuple[Settings, list[str]]:
    """The argon2 settings the server will use (TENANTRY_PASSWORD_* or the product's defaults),
    read through the product's own loader so they are validated the same way, and which
    variables came from the environment."""
    chosen = {k: v for k, v in os.environ.items() if k.startswith(PASSWORD_PREFIX)}
    return load_settings(environ=chosen, env_file=None), sorted(chosen)


def describe_parameters(settings: Settings) -> dict[str, int]:
    return {
        "time_cost": settings.password_time_cost,
        "memory_kib": settings.password_memory_kib,
        "parallelism": settings.password_parallelism,
        "hash_concurrency": settings.password_hash_concurrency,
    }


# ---------------------------------------------------------------------------------------------
# The bare baseline: argon2 directly


def raw_hashing(settings: Settings, password: str, seconds: float) -> Sample:
    """argon2 hashes per second with the server's parameters, in a pool as large as its pool.

    A login verifies one hash, which costs the same as computing one.
    """
    hasher = PasswordHasher(
        time_cost=settings.password_time_cost,
        memory_cost=settings.password_memory_kib,
        parallelism=settings.password_parallelism,
    )
    sample = Sample()
    deadline = time.monotonic() + seconds

    def worker() -> None:
        for _ in until(deadline):
            started = time.perf_counter()
            hasher.hash(password)
            sample.latencies_ms.append((time.perf_counter() - started) * 1000)

    workers = settings.password_hash_concurrency
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2") as pool:
        started = time.perf_counter()
        for future in [pool.submit(worker) for _ in range(workers)]:
            future.result()
        sample.elapsed_s = time.perf_counter() - started
    return sample


# ---------------------------------------------------------------------------------------------
# The product under test


def server_environment(data_dir: Path, port: int, settings: Settings) -> dict[str, str]:
    """The product's environment with the argon2 parameters measured directly, made explicit."""
    return product_environment(data_dir, port) | {
        f"{PASSWORD_PREFIX}TIME_COST": str(settings.password_time_cost),
        f"{PASSWORD_PREFIX}MEMORY_KIB": str(settings.password_memory_kib),
        f"{PASSWORD_PREFIX}PARALLELISM": str(settings.password_parallelism),
        f"{PASSWORD_PREFIX}HASH_CONCURRENCY": str(settings.password_hash_concurrency),
    }


# ---------------------------------------------------------------------------------------------
# Load


def login_problem(response: httpx.Response) -> str | None:
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return "HTTP 200 with a body that is not JSON"
    return None if "access_token" in body else "HTTP 200 without access_token"


def health_problem(response: httpx.Response) -> str | None:
    return None if response.status_code == 200 else f"HTTP {response.status_code}"


async def timed(
    sample: Sample,
    request: Awaitable[httpx.Response],
    problem: Callable[[httpx.Response], str | None],
) -> None:
    """Await one request; record its latency if it succeeded, else what went wrong."""
    started = time.perf_counter()
    try:
        response = await request
    except httpx.HTTPError as error:
        sample.fail(type(error).__name__, repr(error))
        return
    latency_ms = (time.perf_counter() - started) * 1000
    if (kind := problem(response)) is None:
        sample.latencies_ms.append(latency_ms)
    else:
        sample.fail(kind, response.text)


async def login_load(base_url: str, clients: int, seconds: float) -> Sample:
    """``clients`` clients, each with its own connection, logging in back to back."""
    sample = Sample()

    async def client_loop(client: httpx.AsyncClient, deadline: float) -> None:
        for _ in until(deadline):
            await timed(sample, client.post("/api/v1/auth/login", json=LOGIN), login_problem)

    async with contextlib.AsyncExitStack() as stack:
        pool = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S)
            )
            for _ in range(clients)
        ]
        started = time.perf_counter()
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(client_loop(client, deadline) for client in pool))
        sample.elapsed_s = time.perf_counter() - started
    return sample


async def probe_health(base_url: str, seconds: float) -> Sample:
    """One client asking GET /health, one request at a time, paced by PROBE_GAP_S."""
    sample = Sample()
    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as client:
        await client.get("/health")  # opens the connection; the connect is not what we measure
        started = time.perf_counter()
        for _ in until(time.monotonic() + seconds):
            await timed(sample, client.get("/health"), health_problem)
            await asyncio.sleep(PROBE_GAP_S)
        sample.elapsed_s = time.perf_counter() - started
    return sample


async def set_up_tenant(base_url: str) -> None:
    """Create the tenant and its owner, and check one login works before measuring any."""
    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as client:
        created = await client.post("/api/v1/tenants", json=TENANT)
        if created.status_code != 201:
            raise BenchError(
                f"POST /api/v1/tenants: expected 201, got {created.status_code}: {created.text}"
            )
        login = await client.post("/api/v1/auth/login", json=LOGIN)
        if login_problem(login) is not None:
            raise BenchError(
                f"POST /api/v1/auth/login: expected 200 with access_token, "
                f"got {login.status_code}: {login.text}"
            )


async def measure_server(base_url: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    await set_up_tenant(base_url)

    print(f"== health, idle ({args.health_seconds:g} s)")
    with CpuMeter() as cpu:
        idle = await probe_health(base_url, args.health_seconds)
    results = {"health_idle": idle.summary(cpu.busy_pct)}

    print(f"== login, {args.concurrency} clients ({args.duration:g} s)")
    with CpuMeter() as cpu:
        login = await login_load(base_url, args.concurrency, args.duration)
    results["login"] = login.summary(cpu.busy_pct)

    print(f"== login, {args.concurrency} clients, with the health prober ({args.duration:g} s)")
    with CpuMeter() as cpu:
        loaded_login, loaded_health = await asyncio.gather(
            login_load(base_url, args.concurrency, args.duration),
            probe_health(base_url, args.duration),
        )
    results["login_while_probing"] = loaded_login.summary(cpu.busy_pct)
    results["health_under_login_load"] = loaded_health.summary(cpu.busy_pct)
    return results


# ---------------------------------------------------------------------------------------------
# Report


def markdown_tables(report: dict[str, Any]) -> str:
    results, concurrency = report["results"], report["options"]["concurrency"]
    rows = [
        (f"argon2 hash, direct, pool of {report['argon2']['hash_concurrency']}", "raw_hash"),
        (f"login, {concurrency} clients", "login"),
        ("health, idle", "health_idle"),
        (f"health, under login load ({concurrency} clients)", "health_under_login_load"),
        (f"login, {concurrency} clients, while probing health", "login_while_probing"),
    ]
    lines = [
        "| Measurement | per s | count | errors | CPU busy % | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, key in rows:
        r = results[key]
        numbers = [r["p50_ms"], r["p95_ms"], r["p99_ms"], r["max_ms"]]
        lines.append(
            f"| {label} | {cell(r['per_second'])} | {r['count']} | {r['errors']} "
            f"| {cell(r['cpu_busy_pct'], 0)} | " + " | ".join(cell(n) for n in numbers) + " |"
        )
    ratios = report["ratios"]
    lines += [
        "",
        "| Figure | Value |",
        "|---|---:|",
        f"| logins/s ÷ direct argon2 hashes/s | {cell(ratios['logins_per_raw_hash'], 2)} |",
        f"| health p99 under login load ÷ idle | {cell(ratios['health_p99_loaded_over_idle'], 2)} |",
    ]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds of each login phase (default 10)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="concurrent login clients (default 8)"
    )
    parser.add_argument(
        "--health-seconds",
        type=float,
        default=5.0,
        help="seconds of the idle /health baseline (default 5)",
    )
    args = parser.parse_args()
    if args.duration <= 0 or args.health_seconds <= 0 or args.concurrency < 1:
        parser.error("durations must be positive and --concurrency at least 1")
    return args


def run(args: argparse.Namespace, stamp: str) -> dict[str, Any]:
    settings, overridden = password_settings()
    machine = describe_machine()
    parameters = describe_parameters(settings)
    print(
        f"machine: nproc {machine['nproc']}, {machine['cpu_model']}, {machine['python']}, "
        f"{machine['platform']}"
    )
    print(
        f"argon2id: time_cost {parameters['time_cost']}, memory {parameters['memory_kib']} KiB, "
        f"parallelism {parameters['parallelism']}, concurrency {parameters['hash_concurrency']} "
        f"({'from ' + ', '.join(overridden) if overridden else 'defaults'})"
    )

    machine["background_cpu_busy_pct"] = background_load()

    print(f"== argon2 directly, pool of {parameters['hash_concurrency']} ({args.duration:g} s)")
    with CpuMeter() as cpu:
        raw = raw_hashing(settings, LOGIN["password"], args.duration)
    results = {"raw_hash": raw.summary(cpu.busy_pct)}

    log_path = RESULTS_DIR / f"login-{stamp}.server.log"
    with tempfile.TemporaryDirectory(prefix="tenantry-bench-", ignore_cleanup_errors=True) as tmp:
        port = free_port()
        base_url = f"http://{HOST}:{port}"
        env = server_environment(Path(tmp) / "data", port, settings)
        print(f"== starting tenantry dev on {base_url} (log: {log_path})")
        with running(
            tenantry("dev"), name="tenantry dev", env=env, cwd=Path(tmp), log_path=log_path
        ) as process:
            ready_s = wait_ready(process, base_url, log_path, "tenantry dev")
            print(f"   ready after {ready_s:.1f} s")
            results |= asyncio.run(measure_server(base_url, args))
        print(f"== tenantry dev stopped with exit code {process.returncode}")

    return {
        "timestamp": stamp,
        "machine": machine,
        "argon2": parameters,
        "argon2_overridden_by": overridden,
        "options": vars(args),
        "server": {"ready_s": round(ready_s, 2), "exit_code": process.returncode},
        "results": results,
        "ratios": {
            "logins_per_raw_hash": ratio(
                results["login"]["per_second"], results["raw_hash"]["per_second"]
            ),
            "health_p99_loaded_over_idle": ratio(
                results["health_under_login_load"]["p99_ms"], results["health_idle"]["p99_ms"]
            ),
        },
    }


def report_login(report: dict[str, Any], _stamp: str) -> bool:
    print(markdown_tables(report))
    for name, result in report["results"].items():
        for kind, count in result["error_kinds"].items():
            print(f"\n{name}: {count} x {kind}, first: {result['error_examples'][kind]}")
    return bool(report["server"]["exit_code"] == 0)


def main() -> int:
    args = parse_args()
    return bench_main("login", lambda stamp: run(args, stamp), report_login, (SettingsError,))


if __name__ == "__main__":
    sys.exit(main())

"""Metrics benchmark: what the Prometheus request middleware costs, and how long a scrape takes.

Starts `tenantry dev` twice on fresh data directories, one with TENANTRY_METRICS_ENABLED=true
and one with false, drives the same hot endpoints of both with wrk in alternating rounds and
compares requests/s; then, after well over 10,000 requests, times GET /metrics.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import (
    HOST,
    REQUEST_TIMEOUT_S,
    RESULTS_DIR,
    BenchError,
    CpuMeter,
    add_wrk_arguments,
    bad_wrk_arguments,
    bench_main,
    cell,
    describe_wrk_run,
    errors_of,
    free_port,
    product_environment,
    ratio,
    running,
    tenantry,
    wait_ready,
    wrk,
)
from projects import Scenario, read_script
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import create_async_engine

from tenantry.config import load_settings
from tenantry.infrastructure.observability.logging import AccessLines
from tenantry.infrastructure.observability.metrics import PrometheusRequestMetrics
from tenantry.presentation.middleware import RequestContextMiddleware

MODES = ("on", "off")
PASSWORD = "correct horse battery 9"
TENANT = {
    "name": "Bench",
    "slug": "bench",
    "owner": {"username": "bench", "email": "bench@bench.example", "password": PASSWORD},
}
# The targets: the middleware costs under 10 % of a hot endpoint's throughput, and a
# scrape after 10,000 requests takes under 50 ms.
MIN_RATIO = 0.90
MAX_SCRAPE_MS = 50.0
MIN_REQUESTS = 10_000
# Before the scrapes: every kind of answer once per route, so the scrape carries the series a
# real API has (404 and 401 too), not only the two the load touched.
SPREAD_ROUNDS = 50
# The middleware alone, in this process: requests per round, rounds (medians are reported).
DIRECT_REQUESTS = 100_000
DIRECT_ROUNDS = 5


def sign_in(client: httpx.Client) -> tuple[str, str]:
    """A tenant and its owner, signed in: the bearer token and a project's id."""
    created = client.post("/api/v1/tenants", json=TENANT)
    if created.status_code != 201:
        raise BenchError(f"POST /api/v1/tenants: {created.status_code}: {created.text[:500]}")
    login = {"tenant": TENANT["slug"], "login": "bench", "password": PASSWORD}
    response = client.post("/api/v1/auth/login", json=login)
    if response.status_code != 200:
        raise BenchError(f"POST /api/v1/auth/login: {response.status_code}: {response.text[:500]}")
    token = response.json()["access_token"]
    project = client.post(
        "/api/v1/projects",
        json={"name": "Bench project", "description": "read by the benchmark"},
        headers={"Authorization": f"Bearer {token}"},
    )
    if project.status_code != 201:
        raise BenchError(f"POST /api/v1/projects: {project.status_code}: {project.text[:500]}")
    return token, project.json()["id"]


def scenarios(project_id: str) -> list[Scenario]:
    return [
        Scenario("info", "GET /api/v1/info (public, no database)", "get", ["/api/v1/info"]),
        Scenario(
            "get_by_id",
            "GET /api/v1/projects/{id} (bearer token, two queries)",
            "get",
            [f"/api/v1/projects/{project_id}"],
        ),
    ]


def measure(
    urls: dict[str, str],
    scripts: dict[tuple[str, str], Path],
    labels: dict[str, str],
    args: argparse.Namespace,
) -> tuple[dict[str, Any], int]:
    """Per scenario, ``--rounds`` rounds of a warm-up and a measured wrk run against each
    server, the order alternating from round to round so that drift (a warming cache, other
    load) does not favour either. Returns the results and how many requests the metrics-on
    server answered."""
    results: dict[str, Any] = {}
    answered_on = 0
    for key, label in labels.items():
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        for round_number in range(args.rounds):
            order = MODES if round_number % 2 == 0 else MODES[::-1]
            for mode in order:
                print(f"== {label}: metrics {mode}, round {round_number + 1}/{args.rounds}")
                if args.warmup:
                    warm = wrk(urls[mode], scripts[(key, mode)], args.warmup, args)
                    answered_on += warm["requests"] if mode == "on" else 0
                with CpuMeter() as cpu:
                    result = wrk(urls[mode], scripts[(key, mode)], args.duration, args)
                answered_on += result["requests"] if mode == "on" else 0
                runs[mode].append(result | {"cpu_busy_pct": cpu.busy_pct})
        medians = {mode: statistics.median(r["per_second"] for r in runs[mode]) for mode in MODES}
        results[key] = {
            "label": label,
            "runs": runs,
            "median_per_second": medians,
            "on_per_off": ratio(medians["on"], medians["off"]),
        }
    return results, answered_on


async def _direct_rounds() -> dict[str, list[float]]:
    async def endpoint(scope: dict[str, Any], _receive: Any, send: Any) -> None:
        scope["path_template"] = "/api/v1/info"  # what Litestar's router leaves in the scope
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: dict[str, Any]) -> None:
        return None

    # Its engine never connects: a scrape would only read its pool's counters.
    engine = create_async_engine("postgresql+asyncpg://bench@127.0.0.1:1/none")
    # The request middleware with and without its metrics; its access line is not what is
    # measured, so it is filtered out before it is rendered.
    quiet = AccessLines(load_settings(environ={"TENANTRY_LOG_LEVEL": "WARNING"}, env_file=None))
    apps = {
        mode: RequestContextMiddleware(
            endpoint,
            access_log=quiet,
            docs_path="/docs",
            production=False,
            metrics=PrometheusRequestMetrics(engine) if mode == "on" else None,
        )
        for mode in MODES
    }
    timings: dict[str, list[float]] = {mode: [] for mode in MODES}
    for round_number in range(DIRECT_ROUNDS):
        for mode in MODES if round_number % 2 == 0 else MODES[::-1]:
            app = apps[mode]
            started = time.perf_counter()
            for _ in range(DIRECT_REQUESTS):
                scope = {"type": "http", "method": "GET", "path": "/api/v1/info", "headers": []}
                await app(scope, receive, send)
            timings[mode].append((time.perf_counter() - started) / DIRECT_REQUESTS * 1e6)
    return timings


def middleware_cost() -> dict[str, Any]:
    """Microseconds per request of the metrics middleware and its Prometheus series, measured
    without HTTP, the network or other processes: the figure wrk's noise cannot blur."""
    timings = asyncio.run(_direct_rounds())
    medians = {mode: statistics.median(timings[mode]) for mode in MODES}
    return {
        "requests_per_round": DIRECT_REQUESTS,
        "timings_us": {mode: [round(t, 3) for t in timings[mode]] for mode in MODES},
        "median_us": medians,
        "added_us": medians["on"] - medians["off"],
    }


def spread(client: httpx.Client, token: str, project_id: str) -> int:
    """Requests of every kind the API answers: 200s, 401, 404 on a route and unmatched."""
    bearer = {"Authorization": f"Bearer {token}"}
    requests = [
        ("/health", {}),
        ("/ready", {}),
        ("/api/v1/projects", bearer),
        (f"/api/v1/projects/{project_id}", {}),
        ("/api/v1/projects/00000000-0000-7000-8000-000000000000", bearer),
        ("/no/such/path", {}),
        ("/api/v1/auth/me", bearer),
    ]
    for _ in range(SPREAD_ROUNDS):
        for path, headers in requests:
            client.get(path, headers=headers)
    return SPREAD_ROUNDS * len(requests)


def time_scrapes(client: httpx.Client, count: int) -> dict[str, Any]:
    """``count`` scrapes on one kept-alive connection, as Prometheus does."""
    timings, body = [], b""
    for _ in range(count):
        started = time.perf_counter()
        response = client.get("/metrics")
        timings.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise BenchError(f"GET /metrics: {response.status_code}: {response.text[:500]}")
        body = response.content
    families = list(text_string_to_metric_families(body.decode()))
    samples = [s for f in families for s in f.samples]
    counted = sum(s.value for s in samples if s.name == "tenantry_http_requests_total")
    ordered = sorted(timings)
    return {
        "scrapes": count,
        "median_ms": statistics.median(timings),
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
        "body_bytes": len(body),
        "samples": len(samples),
        "tenantry_samples": sum(s.name.startswith("tenantry_") for s in samples),
        "requests_counted": int(counted),
        "timings_ms": [round(t, 2) for t in timings],
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_wrk_arguments(parser)
    parser.add_argument(
        "--rounds", type=int, default=3, help="measured runs per server and endpoint (default 3)"
    )
    parser.add_argument("--scrapes", type=int, default=21, help="timed scrapes (default 21)")
    args = parser.parse_args()
    if bad_wrk_arguments(args) or args.rounds < 1 or args.scrapes < 1:
        parser.error("durations, rounds and scrapes must be positive; 1 <= threads <= connections")
    return args


def run(args: argparse.Namespace, stamp: str) -> dict[str, Any]:
    machine, version = describe_wrk_run(args)
    print(f"== the middleware alone, {DIRECT_ROUNDS} x {DIRECT_REQUESTS:,} requests in-process")
    direct = middleware_cost()
    print(f"   adds {direct['added_us']:.2f} µs per request")

    logs = {mode: RESULTS_DIR / f"metrics-{stamp}.{mode}.log" for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="tenantry-bench-", ignore_cleanup_errors=True) as tmp:
        ports = {mode: free_port() for mode in MODES}
        urls = {mode: f"http://{HOST}:{ports[mode]}" for mode in MODES}
        envs = {
            mode: product_environment(Path(tmp) / mode, ports[mode])
            | {"TENANTRY_METRICS_ENABLED": "true" if mode == "on" else "false"}
            for mode in MODES
        }
        with (
            running(
                tenantry("dev"),
                name="metrics on",
                env=envs["on"],
                cwd=Path(tmp),
                log_path=logs["on"],
            ) as on,
            running(
                tenantry("dev"),
                name="metrics off",
                env=envs["off"],
                cwd=Path(tmp),
                log_path=logs["off"],
            ) as off,
        ):
            processes = {"on": on, "off": off}
            for mode in MODES:
                print(f"== tenantry dev, metrics {mode}, on {urls[mode]} (log: {logs[mode]})")
                seconds = wait_ready(processes[mode], urls[mode], logs[mode], f"metrics {mode}")
                print(f"   ready after {seconds:.1f} s")
            signed: dict[str, tuple[str, str]] = {}
            for mode in MODES:
                with httpx.Client(base_url=urls[mode], timeout=REQUEST_TIMEOUT_S) as client:
                    signed[mode] = sign_in(client)
                    if mode == "off" and client.get("/metrics").status_code != 404:
                        raise BenchError("metrics off: GET /metrics should be 404")
            per_mode = {mode: scenarios(signed[mode][1]) for mode in MODES}
            labels = {s.key: s.label for s in per_mode["on"]}
            scripts = {
                (s.key, mode): read_script(Path(tmp) / mode, s, signed[mode][0])
                for mode in MODES
                for s in per_mode[mode]
            }
            results, answered = measure(urls, scripts, labels, args)
            with httpx.Client(base_url=urls["on"], timeout=REQUEST_TIMEOUT_S) as client:
                answered += spread(client, *signed["on"])
                if answered < MIN_REQUESTS:
                    raise BenchError(f"only {answered} requests before the scrapes")
                print(f"== {args.scrapes} scrapes of /metrics after {answered} requests")
                scrapes = time_scrapes(client, args.scrapes)
        exit_codes = {mode: processes[mode].returncode for mode in MODES}

    return {
        "timestamp": stamp,
        "machine": machine,
        "options": vars(args),
        "load_generator": {
            "tool": version,
            "threads": args.threads,
            "connections": args.connections,
        },
        "middleware_alone": direct,
        "scenarios": results,
        "requests_before_scrapes": answered,
        "scrape": scrapes,
        "servers": {
            mode: {"exit_code": exit_codes[mode], "log": str(logs[mode])} for mode in MODES
        },
        "targets": {"min_on_per_off": MIN_RATIO, "max_scrape_median_ms": MAX_SCRAPE_MS},
    }


def markdown_tables(report: dict[str, Any]) -> str:
    lines = [
        "| Endpoint | metrics | req/s (median) | runs req/s | p50 ms | p99 ms | CPU busy % |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for scenario in report["scenarios"].values():
        for mode in MODES:
            runs = scenario["runs"][mode]
            lines.append(
                f"| {scenario['label']} | {mode} | {cell(scenario['median_per_second'][mode])} "
                f"| {', '.join(cell(r['per_second'], 0) for r in runs)} "
                f"| {cell(statistics.median(r['p50_ms'] for r in runs), 2)} "
                f"| {cell(statistics.median(r['p99_ms'] for r in runs), 2)} "
                f"| {cell(statistics.median(r['cpu_busy_pct'] or 0 for r in runs), 0)} |"
            )
    added = report["middleware_alone"]["added_us"]
    lines += [
        "",
        "| Endpoint | on ÷ off, req/s (medians) | middleware µs x off req/s |",
        "|---|---:|---:|",
    ]
    # One event loop serves every request of a process: at R requests/s it spends at most
    # 1/R s on each, so the middleware's share of that time is at least added x R.
    lines += [
        f"| {s['label']} | {cell(s['on_per_off'], 3)} "
        f"| {cell(added * s['median_per_second']['off'] / 1e4, 2)} % |"
        for s in report["scenarios"].values()
    ]
    direct = report["middleware_alone"]["median_us"]
    lines += [
        "",
        f"The middleware alone (in-process, {report['middleware_alone']['requests_per_round']:,} "
        f"requests a round, medians): {cell(direct['off'], 2)} µs per request without it, "
        f"{cell(direct['on'], 2)} µs with it: **{cell(added, 2)} µs added**.",
    ]
    scrape = report["scrape"]
    lines += [
        "",
        "| requests before | scrapes | median ms | min ms | max ms | body bytes | samples "
        "| tenantry_* samples |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {report['requests_before_scrapes']} | {scrape['scrapes']} "
        f"| {cell(scrape['median_ms'], 2)} | {cell(scrape['min_ms'], 2)} "
        f"| {cell(scrape['max_ms'], 2)} | {scrape['body_bytes']} | {scrape['samples']} "
        f"| {scrape['tenantry_samples']} |",
    ]
    return "\n".join(lines)


def report_metrics(report: dict[str, Any], _stamp: str) -> bool:
    print(markdown_tables(report))
    held = True
    for scenario in report["scenarios"].values():
        failed = sum(errors_of(r) for mode in MODES for r in scenario["runs"][mode])
        if failed:
            held = False
            print(f"\n{scenario['label']}: {failed} failed requests; see the servers' logs")
        if (scenario["on_per_off"] or 0) < MIN_RATIO:
            held = False
            print(f"\n{scenario['label']}: on ÷ off below {MIN_RATIO}")
    if report["scrape"]["median_ms"] >= MAX_SCRAPE_MS:
        held = False
        print(f"\nmedian scrape at or above {MAX_SCRAPE_MS} ms")
    print(
        f"\ntargets: on ÷ off >= {MIN_RATIO} and a median scrape under {MAX_SCRAPE_MS:g} ms "
        f"after {MIN_REQUESTS:,} requests: {'held' if held else 'NOT held'}"
    )
    servers_ok = all(s["exit_code"] == 0 for s in report["servers"].values())
    return held and servers_ok


def main() -> int:
    args = parse_args()
    return bench_main("metrics", lambda stamp: run(args, stamp), report_metrics)


if __name__ == "__main__":
    sys.exit(main())

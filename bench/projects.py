"""Projects benchmark: the product's authenticated project reads against a bare baseline.

Seeds a fresh data directory (20 tenants of 500 projects), starts `tenantry dev` on it and
bench/baseline_app.py beside it (Litestar and asyncpg on the same PostgreSQL, as the same role,
with the same SQL, without authentication), checks that both answer 200 with the same bodies,
then drives each read endpoint with wrk for a fixed time and compares requests/s.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode

import httpx
from common import (
    HOST,
    REQUEST_TIMEOUT_S,
    RESULTS_DIR,
    BenchError,
    CpuMeter,
    PeakRss,
    Requests,
    add_wrk_arguments,
    bad_wrk_arguments,
    bench_main,
    cell,
    describe_wrk_run,
    errors_of,
    free_port,
    load_generator,
    log_tail,
    product_environment,
    ratio,
    running,
    tenantry,
    wait_ready,
    wrk,
    wrk_script,
)

from tenantry.cli.common import EMBEDDED_DATABASE
from tenantry.infrastructure.db.rls import APP_ROLE

BASELINE_APP = Path(__file__).resolve().parent / "baseline_app.py"
SEED_TENANTS = 20
SEED_PROJECTS = 500
SEED_DOCUMENTS = 2
PASSWORD = "correct horse battery 9"
# `tenantry seed` names its tenants seed-0001 ... and their owners owner@<slug>.example.
LOGIN = {"tenant": "seed-0001", "login": "owner@seed-0001.example", "password": PASSWORD}
# get-by-id rotates over one page of the tenant's ids, the largest page the API gives.
ID_COUNT = 100
LIST_QUERY = {"limit": 20, "order_by": "-created_at"}
# A word of the seeded names (see tenantry.infrastructure.db.seed): about 1 name in 12 has it.
SEARCH = "delta"
SEED_TIMEOUT_S = 600.0
PROJECT_FIELDS = {"id", "name", "description", "owner_id", "version", "created_at", "updated_at"}
PAGE_FIELDS = {"items", "total", "limit", "offset"}
SERVERS = ("product", "baseline")
NOTES = [
    "Same load for both: wrk on 127.0.0.1 sends the same requests, Authorization header included.",
    "The baseline does no authentication: its tenant is fixed at start-up. The product's figure "
    "also pays per request for the JWT check, a role/active check query in the request's "
    "transaction, SQLAlchemy and dependency injection, and its own access log line.",
    "Both run one uvicorn process with uvicorn's access log off, on the same embedded PostgreSQL "
    f"as role {APP_ROLE} under row level security; the baseline sets app.tenant_id as the "
    "product does, in each request's transaction.",
]

Kind = Literal["get", "list"]


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    kind: Kind
    paths: list[str]  # wrk requests them in turn


def read_scenarios(ids: list[str]) -> list[Scenario]:
    listing = f"/api/v1/projects?{urlencode(LIST_QUERY)}"
    return [
        Scenario(
            "get_by_id",
            f"GET /api/v1/projects/{{id}}, rotating over {len(ids)} ids",
            "get",
            [f"/api/v1/projects/{project_id}" for project_id in ids],
        ),
        Scenario("list", f"GET {listing}", "list", [listing]),
        Scenario("list_search", f"GET {listing}&q={SEARCH}", "list", [f"{listing}&q={SEARCH}"]),
    ]


# ---------------------------------------------------------------------------------------------
# Set-up: data, the two servers, and the checks that both answer the same


def seed(env: dict[str, str], cwd: Path, log_path: Path) -> float:
    """Seconds `tenantry seed` took to fill the data directory (it starts and stops PostgreSQL)."""
    command = tenantry(
        "seed",
        f"--tenants={SEED_TENANTS}",
        f"--projects={SEED_PROJECTS}",
        f"--documents={SEED_DOCUMENTS}",
        f"--password={PASSWORD}",
    )
    started = time.monotonic()
    # `running` interrupts it with SIGINT on a timeout or Ctrl-C, so it stops PostgreSQL itself.
    with running(command, name="tenantry seed", env=env, cwd=cwd, log_path=log_path) as process:
        try:
            process.wait(timeout=SEED_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise BenchError(f"tenantry seed took over {SEED_TIMEOUT_S:.0f} s") from None
    if process.returncode != 0:
        raise BenchError(f"tenantry seed exited with {process.returncode}:\n" + log_tail(log_path))
    return time.monotonic() - started


def database_dsn(data_dir: Path) -> str:
    """The product's own database URL, for asyncpg: the embedded PostgreSQL's unix socket.

    The socket's directory is the fifth line of postmaster.pid (PostgreSQL's format); pgserver
    puts it in the data directory unless that path is too long for a socket.
    """
    lines = (data_dir / "postgres" / "postmaster.pid").read_text().splitlines()
    return f"postgresql://{APP_ROLE}@/{EMBEDDED_DATABASE}?host={quote(lines[4])}"


def get_json(client: httpx.Client, path: str, server: str) -> Any:
    response = client.get(path)
    if response.status_code != 200:
        raise BenchError(
            f"{server}: GET {path}: expected 200, got {response.status_code}: {response.text[:500]}"
        )
    return response.json()


def sign_in(product: httpx.Client) -> tuple[str, str, list[str]]:
    """The owner's bearer token, the tenant's id, and ids of its projects."""
    response = product.post("/api/v1/auth/login", json=LOGIN)
    if response.status_code != 200 or "access_token" not in response.json():
        raise BenchError(
            f"product: POST /api/v1/auth/login: expected 200 with access_token, "
            f"got {response.status_code}: {response.text[:500]}"
        )
    token = response.json()["access_token"]
    product.headers["Authorization"] = f"Bearer {token}"
    tenant_id = get_json(product, "/api/v1/auth/me", "product")["tenant_id"]
    page = get_json(product, f"/api/v1/projects?limit={ID_COUNT}", "product")
    if page.get("total") != SEED_PROJECTS or len(page.get("items", ())) != ID_COUNT:
        raise BenchError(
            f"product: expected {SEED_PROJECTS} seeded projects in {LOGIN['tenant']}, "
            f"got total {page.get('total')} and {len(page.get('items', ()))} items"
        )
    return token, tenant_id, [item["id"] for item in page["items"]]


def body_problem(body: Any, scenario: Scenario) -> str | None:
    """What is wrong with a 200 body of ``scenario``, or None."""
    if scenario.kind == "get":
        return None if isinstance(body, dict) and set(body) == PROJECT_FIELDS else "not a project"
    if not isinstance(body, dict) or set(body) != PAGE_FIELDS:
        return "not a page of {items, total, limit, offset}"
    items = body["items"]
    if any(not isinstance(item, dict) or set(item) != PROJECT_FIELDS for item in items):
        return "an item is not a project"
    if len(items) != min(LIST_QUERY["limit"], body["total"]) or not items:
        return f"{len(items)} items of {body['total']}"
    created = [datetime.fromisoformat(item["created_at"]) for item in items]
    if created != sorted(created, reverse=True):
        return "items not newest first"
    if SEARCH in scenario.paths[0] and any(SEARCH not in i["name"].lower() for i in items):
        return f"an item's name lacks {SEARCH!r}"
    return None


def check_servers(product: httpx.Client, baseline: httpx.Client, scenarios: list[Scenario]) -> None:
    """Every path of every scenario: 200 with the expected shape from both, and the same body.

    Equal bodies show that the baseline reads the same rows, so the comparison is fair.
    """
    for scenario in scenarios:
        for path in scenario.paths:
            bodies = {
                "product": get_json(product, path, "product"),
                "baseline": get_json(baseline, path, "baseline"),
            }
            for server, body in bodies.items():
                if (problem := body_problem(body, scenario)) is not None:
                    raise BenchError(f"{server}: GET {path}: {problem}: {str(body)[:500]}")
            if bodies["product"] != bodies["baseline"]:
                raise BenchError(
                    f"GET {path}: the baseline's body differs from the product's:\n"
                    f"product:  {str(bodies['product'])[:500]}\n"
                    f"baseline: {str(bodies['baseline'])[:500]}"
                )


# ---------------------------------------------------------------------------------------------
# Load


def read_script(directory: Path, scenario: Scenario, token: str) -> Path:
    """The wrk script of a read scenario: its paths in turn, with the bearer header."""
    headers = {"Authorization": f"Bearer {token}"}
    return wrk_script(directory / f"{scenario.key}.lua", Requests(scenario.paths, headers=headers))


def measure(
    urls: dict[str, str],
    memory: dict[str, PeakRss],
    scripts: dict[str, Path],
    scenarios: list[Scenario],
    args: argparse.Namespace,
) -> dict[str, dict[str, Any]]:
    """Each scenario against the product, then the baseline: an unrecorded warm-up (pools fill,
    caches warm), then the measured run."""
    results: dict[str, dict[str, Any]] = {}
    for scenario in scenarios:
        results[scenario.key] = {"label": scenario.label, "paths": len(scenario.paths)}
        for server in SERVERS:
            print(f"== {scenario.label}: {server} ({args.warmup} s warm-up, {args.duration} s)")
            if args.warmup:
                wrk(urls[server], scripts[scenario.key], args.warmup, args)
            with CpuMeter() as cpu, memory[server].watching():
                result = wrk(urls[server], scripts[scenario.key], args.duration, args)
            results[scenario.key][server] = result | {"cpu_busy_pct": cpu.busy_pct}
        results[scenario.key]["product_per_baseline"] = ratio(
            results[scenario.key]["product"]["per_second"],
            results[scenario.key]["baseline"]["per_second"],
        )
    return results


# ---------------------------------------------------------------------------------------------
# Report


def markdown_tables(report: dict[str, Any]) -> str:
    lines = [
        "| Scenario | Server | req/s | p50 ms | p90 ms | p99 ms | max ms | non-2xx "
        "| socket errors | CPU busy % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in report["scenarios"].values():
        for server in SERVERS:
            r = scenario[server]
            latencies = " | ".join(cell(r[f"{p}_ms"], 2) for p in ("p50", "p90", "p99", "max"))
            lines.append(
                f"| {scenario['label']} | {server} | {cell(r['per_second'])} | {latencies} "
                f"| {r['non_2xx']} | {sum(r['socket_errors'].values())} "
                f"| {cell(r['cpu_busy_pct'], 0)} |"
            )
    lines += ["", "| Scenario | product ÷ baseline, req/s |", "|---|---:|"]
    lines += [
        f"| {s['label']} | {cell(s['product_per_baseline'], 2)} |"
        for s in report["scenarios"].values()
    ]
    lines += ["", "| Server | RSS before load MiB | peak RSS under load MiB |", "|---|---:|---:|"]
    for server in SERVERS:
        s = report["servers"][server]
        lines.append(
            f"| {server} | {s['rss_before_load_mib']:.1f} | {s['peak_rss_under_load_mib']:.1f} |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_wrk_arguments(parser)
    args = parser.parse_args()
    if bad_wrk_arguments(args):
        parser.error(
            "--duration must be at least 1, --warmup at least 0, and 1 <= threads <= connections"
        )
    return args


def run(args: argparse.Namespace, stamp: str) -> dict[str, Any]:
    machine, version = describe_wrk_run(args)

    logs = {name: RESULTS_DIR / f"projects-{stamp}.{name}.log" for name in ("seed", *SERVERS)}
    with tempfile.TemporaryDirectory(prefix="tenantry-bench-", ignore_cleanup_errors=True) as tmp:
        data_dir = Path(tmp) / "data"
        port, baseline_port = free_port(), free_port()
        urls = {"product": f"http://{HOST}:{port}", "baseline": f"http://{HOST}:{baseline_port}"}
        env = product_environment(data_dir, port)
        print(
            f"== seeding {SEED_TENANTS} tenants x {SEED_PROJECTS} projects x {SEED_DOCUMENTS} "
            f"documents (log: {logs['seed']})"
        )
        seed_s = seed(env, Path(tmp), logs["seed"])
        print(f"   seeded in {seed_s:.1f} s")

        print(f"== starting tenantry dev on {urls['product']} (log: {logs['product']})")
        with running(
            tenantry("dev"), name="tenantry dev", env=env, cwd=Path(tmp), log_path=logs["product"]
        ) as product:
            ready_s = {
                "product": wait_ready(product, urls["product"], logs["product"], "tenantry dev")
            }
            print(f"   ready after {ready_s['product']:.1f} s")
            with httpx.Client(base_url=urls["product"], timeout=REQUEST_TIMEOUT_S) as client:
                token, tenant_id, ids = sign_in(client)
            scenarios = read_scenarios(ids)

            command = [
                sys.executable,
                str(BASELINE_APP),
                f"--port={baseline_port}",
                f"--dsn={database_dsn(data_dir)}",
                f"--tenant-id={tenant_id}",
            ]
            # Without TENANTRY_* variables either, though it reads none.
            baseline_env = {k: v for k, v in env.items() if not k.startswith("TENANTRY_")}
            print(f"== starting the baseline on {urls['baseline']} (log: {logs['baseline']})")
            with running(
                command, name="baseline", env=baseline_env, cwd=Path(tmp), log_path=logs["baseline"]
            ) as baseline:
                ready_s["baseline"] = wait_ready(
                    baseline, urls["baseline"], logs["baseline"], "baseline"
                )
                print(f"   ready after {ready_s['baseline']:.1f} s")
                with (
                    httpx.Client(
                        base_url=urls["product"],
                        headers={"Authorization": f"Bearer {token}"},
                        timeout=REQUEST_TIMEOUT_S,
                    ) as product_client,
                    httpx.Client(base_url=urls["baseline"], timeout=REQUEST_TIMEOUT_S) as bare,
                ):
                    check_servers(product_client, bare, scenarios)
                print("   both answer 200 with the same bodies on every path")

                # The API processes alone: `tenantry dev`'s child, its Redis, is not the API.
                memory = {
                    server: PeakRss([process.pid], descendants=False)
                    for server, process in (("product", product), ("baseline", baseline))
                }
                scripts = {s.key: read_script(Path(tmp), s, token) for s in scenarios}
                results = measure(urls, memory, scripts, scenarios, args)
            print(f"== baseline stopped with exit code {baseline.returncode}")
        print(f"== tenantry dev stopped with exit code {product.returncode}")

    exit_codes = {"product": product.returncode, "baseline": baseline.returncode}
    return {
        "timestamp": stamp,
        "machine": machine,
        "options": vars(args),
        "load_generator": load_generator(args, version),
        "seed": {
            "tenants": SEED_TENANTS,
            "projects_per_tenant": SEED_PROJECTS,
            "documents_per_project": SEED_DOCUMENTS,
            "tenant": LOGIN["tenant"],
            "seconds": round(seed_s, 1),
        },
        "servers": {
            server: {
                "ready_s": round(ready_s[server], 2),
                "exit_code": exit_codes[server],
                "log": str(logs[server]),
                **memory[server].summary(),
            }
            for server in SERVERS
        },
        "scenarios": results,
        "notes": NOTES,
    }


def report_projects(report: dict[str, Any], _stamp: str) -> bool:
    print(markdown_tables(report))
    print()
    print("\n".join(f"- {note}" for note in report["notes"]))
    failed = False
    for scenario in report["scenarios"].values():
        for server in SERVERS:
            if count := errors_of(scenario[server]):
                failed = True
                print(
                    f"\n{scenario['label']}: {server} had {count} failed requests "
                    f"(non-2xx {scenario[server]['non_2xx']}, "
                    f"socket {scenario[server]['socket_errors']}); "
                    f"see {report['servers'][server]['log']}"
                )
    servers_ok = all(report["servers"][server]["exit_code"] == 0 for server in SERVERS)
    return servers_ok and not failed


def main() -> int:
    args = parse_args()
    return bench_main("projects", lambda stamp: run(args, stamp), report_projects)


if __name__ == "__main__":
    sys.exit(main())

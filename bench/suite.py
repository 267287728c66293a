"""The benchmark suite: the product's hot paths against bare baselines, in one run.

Starts PostgreSQL and Redis (embedded, or the servers given), migrates and seeds a fresh
database, starts `tenantry serve --workers N` and bench/baseline_app.py with as many processes,
checks that both answer every scenario, then drives each with wrk on loopback: health, login,
get by id, list with filters, create, update (If-Match), delete, upload; and runs no-op tasks
end to end through the product and through bare arq. Prints one markdown table (requests/s,
p50/p95/p99, peak memory, product ÷ baseline), writes the JSON report and, with --write-docs,
docs/performance.md.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.util
import json
import os
import secrets
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from importlib.metadata import version as installed
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import psutil
from baseline_app import AUTHENTICATE_HEADER, STORE_HEADER, TENANT_QUOTA_BYTES
from common import (
    HOST,
    REQUEST_TIMEOUT_S,
    RESULTS_DIR,
    STAMP_FORMAT,
    BenchError,
    CpuMeter,
    Engines,
    HealthProbe,
    PeakRss,
    Requests,
    add_wrk_arguments,
    admin_execute,
    bad_wrk_arguments,
    bench_main,
    cell,
    check_engines,
    describe_filesystem,
    describe_wrk_run,
    errors_of,
    free_port,
    load_generator,
    probe_health,
    ratio,
    running,
    tenantry,
    wait_ready,
    wrk,
    wrk_script,
)
from profiling import CpuPerRequest, per_request, sampled, summarise
from projects import (
    LIST_QUERY,
    LOGIN,
    PROJECT_FIELDS,
    SEARCH,
    SEED_DOCUMENTS,
    SEED_PROJECTS,
    SEED_TENANTS,
    get_json,
    seed,
    sign_in,
)
from projects import Scenario as ReadScenario
from projects import body_problem as read_problem
from sqlalchemy import make_url
from tasks import (
    Plan,
    baseline_worker_command,
    liveness,
    measure_baseline,
    measure_product,
    product_env,
    run_setup_command,
    workers,
)
from upload import Generated, generate, multipart_body, stored_problems
from writes import UPDATE, Kind, Seeder, WriteLoad

from tenantry.config import load_settings, redact_url
from tenantry.infrastructure.db.rls import APP_ROLE
from tenantry.infrastructure.embedded import EmbeddedPostgres, EmbeddedRedis
from tenantry.infrastructure.secrets.environment import keyring_file

ROOT = Path(__file__).resolve().parent.parent
BASELINE_APP = ROOT / "bench" / "baseline_app.py"
DOCS = ROOT / "docs" / "performance.md"
# --write-docs replaces what lies between these lines and keeps the rest of the page.
DOCS_BEGIN = "<!-- bench/suite.py --write-docs: begin -->"
DOCS_END = "<!-- bench/suite.py --write-docs: end -->"
SERVERS = ("product", "baseline")
# update and delete come after the reads: the projects they seed would change what list counts.
SCENARIOS = (
    "health",
    "login",
    "get_by_id",
    "get_by_id_auth",
    "list",
    "create",
    "update",
    "delete",
    "upload",
    "upload_row",
    "tasks",
)
# --against governance-off: the product measured against itself with what governance adds on
# the hot path switched off, on the same database; the scenarios where that is the question.
GOVERNANCE_OFF = {"TENANTRY_AUDIT_TRAIL": "false", "TENANTRY_USAGE_METERING": "false"}
GOVERNED_SCENARIOS = ("get_by_id", "get_by_id_auth", "list", "create", "update", "delete")
CREATE = {"name": "Bench project", "description": "created by the benchmark"}
UPLOAD_BYTES = 256 * 1024
# The login scenario's idle /health probe, after each measured run.
HEALTH_IDLE_S = 4.0
# As bench/tasks.py's defaults: a few concurrent submitters and a warm-up batch.
TASK_CLIENTS = 4
TASK_WARMUP = 20
TASK_TIMEOUT_S = 300.0
JSON_HEADERS = {"Content-Type": "application/json"}
NOTES = [
    "Same load for both servers: wrk on 127.0.0.1, the same requests (the Authorization header "
    "included), the same connections and seconds; with --rounds N each server runs N times, "
    "the product first in odd rounds and the baseline first in even ones, and the ratio is "
    "the median of the rounds' ratios (rates, CPU per request: the runs' together; latency "
    "percentiles: the median of the runs'). The baseline runs as many uvicorn processes as "
    "the product, on the same database as the same role under row level security.",
    "The baseline does no authentication: its tenant (and a project's owner) is fixed at "
    "start-up. The product checks the bearer token and the user's role on every call. Only in "
    "get_by_id_auth does the baseline do that work too, bare: PyJWT verifies the token with the "
    "product's keyring on every request, and the product's role query runs in the read's "
    "transaction.",
    "login: the baseline reads the tenant and the user's password hash and verifies argon2 in a "
    "thread pool as large as the product's; the product also counts the attempt in Redis, "
    "records the login and issues a JWT and a refresh token.",
    "update and delete: every wrk run, warm-up included, gets projects of its own, seeded just "
    "before it (update: one per connection, each request sending the version the last response "
    "gave as If-Match; delete: more than the run can delete, with their documents). The "
    "baseline runs the product's UPDATE (version = $3, 412 when no row) and its soft delete "
    "(the project, then its documents); the product also reads the project before deleting it "
    "(404 and the owner's check).",
    "upload: the baseline streams the raw request body to a file while hashing it and keeps "
    "it; the product parses the multipart body, sniffs the type, reserves quota, stores the "
    "object and its row. Both servers' files are truncated to nothing after each run (the "
    "product's rows stay): until then both have written the same bytes to the same disk. "
    "Truncated, not deleted: on ext4 without a journal, files created within minutes of many "
    "deletions pay for each freed inode they skip, a cost of the cleanup, not of serving.",
    "upload_row: the same requests; the baseline does the least any server storing the file "
    "for its tenant does: it verifies the JWT, parses the multipart body with the product's "
    "parser, hashes the file, writes it by one thread hop as the product's store does, then "
    "confirms the caller's roles (the product's function), charges the tenant's usage within "
    "its quota and inserts the file's row in one transaction sent as one message (no "
    "sniffing, audit trail, webhook outbox, logs or metrics).",
    "tasks: tasks/s end to end (first submission to last completion) and latency per task; "
    "the product's are POST /api/v1/tasks to `tenantry worker`, the baseline's arq enqueue_job "
    "to a bare arq worker, with as many worker processes as API processes. Its memory is the "
    "workers' peak.",
    "health under the login load: after each measured login run, one client of this process "
    "asks GET /health of the same server for 4 s, one request at a time, 10 ms apart (idle), "
    "then goes on asking during another login run as long (loaded), whose logins are not the "
    "scenario's figures. Shown: p99 loaded ÷ p99 idle, the median of the rounds'; the "
    "latencies, the median of the runs' percentiles.",
    "Peak MiB: the RSS of the server's process tree (uvicorn's parent and its workers), summed, "
    "sampled every 50 ms over the measured run; PostgreSQL and Redis are not counted.",
    "errors: failed requests (status 400 or more, socket errors) of the warm-up and the "
    "measured run, product / baseline.",
]


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    requests: Requests
    # What is wrong with both servers' answers to one request, or None: checked before load.
    check: Callable[[dict[str, httpx.Response]], str | None]
    # After every wrk run of a server, given its name (the stored uploads are removed).
    after_run: Callable[[str], None] | None = None
    # update and delete: rows seeded and a script written per wrk run; ``check`` unused.
    writes: WriteLoad | None = None
    # login: /health's latency probed before each measured run and during it (HealthProbe).
    probe_health: bool = False


# ---------------------------------------------------------------------------------------------
# The scenarios and their checks


def status_problem(responses: dict[str, httpx.Response], status: int) -> str | None:
    for server, response in responses.items():
        if response.status_code != status:
            return f"{server}: expected {status}, got {response.status_code}: {response.text[:500]}"
    return None


def check_login(responses: dict[str, httpx.Response]) -> str | None:
    if problem := status_problem(responses, 200):
        return problem
    return None if "access_token" in responses["product"].json() else "product: no access_token"


def check_read(read: ReadScenario) -> Callable[[dict[str, httpx.Response]], str | None]:
    """200 with a project (or a page of them) from both, and the same body: the baseline reads
    the same rows and writes the same JSON, so the comparison is fair."""

    def check(responses: dict[str, httpx.Response]) -> str | None:
        if problem := status_problem(responses, 200):
            return problem
        bodies = {server: response.json() for server, response in responses.items()}
        for server, body in bodies.items():
            if (problem := read_problem(body, read)) is not None:
                return f"{server}: {problem}: {str(body)[:500]}"
        if bodies["product"] != bodies["baseline"]:
            return (
                f"the bodies differ:\nproduct:  {str(bodies['product'])[:500]}\n"
                f"baseline: {str(bodies['baseline'])[:500]}"
            )
        return None

    return check


def check_create(responses: dict[str, httpx.Response]) -> str | None:
    if problem := status_problem(responses, 201):
        return problem
    for server, response in responses.items():
        body = response.json()
        if set(body) != PROJECT_FIELDS or body["name"] != CREATE["name"]:
            return f"{server}: not the project created: {str(body)[:500]}"
    return None


def check_upload(
    source: Generated, files_dir: Path, written: bytes | None
) -> Callable[[dict[str, httpx.Response]], str | None]:
    """The product stored the file (size, hash, type, object on disk); the baseline wrote
    ``written`` (the whole request body), or the file itself when None."""
    expected = (
        {"size": source.size, "sha256": source.sha256}
        if written is None
        else {"size": len(written), "sha256": hashlib.sha256(written).hexdigest()}
    )

    def check(responses: dict[str, httpx.Response]) -> str | None:
        if problems := stored_problems(responses["product"], source, files_dir):
            return "product: " + "; ".join(problems)
        if problem := status_problem(responses, 201):
            return problem
        stored = responses["baseline"].json()
        return None if stored == expected else f"baseline: stored {stored}, sent {expected}"

    return check


def purge_uploads(files_dir: Path, baseline_dir: Path) -> Callable[[str], None]:
    """What a server stored in a run, emptied after it so the disk holds one run's bytes at
    most: the product's objects, the baseline's files, each truncated to nothing.

    Truncated, not deleted: on ext4 without a journal (as on the machines these figures come
    from) a new file skips, one by one, the inodes freed in the last minutes
    (``recently_deleted()`` in fs/ext4/ialloc.c), so every run after the first paid for the
    files the last one deleted, whichever server's they were (bench/README.md, "Sixth round")."""

    def purge(server: str) -> None:
        stored = (
            (files_dir / "tenants").rglob("*") if server == "product" else baseline_dir.iterdir()
        )
        for path in stored:
            if path.is_file():
                os.truncate(path, 0)

    return purge


def no_check(_: dict[str, httpx.Response]) -> str | None:
    return None


def http_scenarios(
    token: str,
    ids: list[str],
    source: Generated,
    files_dir: Path,
    baseline_dir: Path,
    write_load: Callable[[Kind, Requests], WriteLoad],
) -> list[Scenario]:
    bearer = {"Authorization": f"Bearer {token}"}
    get_by_id = ReadScenario(
        "get_by_id",
        f"get_by_id: GET /api/v1/projects/{{id}} ({len(ids)} ids in turn)",
        "get",
        [f"/api/v1/projects/{project_id}" for project_id in ids],
    )
    listing = f"/api/v1/projects?{urlencode(LIST_QUERY)}&q={SEARCH}"
    listed = ReadScenario("list", f"list: GET {listing}", "list", [listing])
    boundary = secrets.token_hex(16)
    chunks, _ = multipart_body(source, boundary, REQUEST_TIMEOUT_S)
    upload = b"".join(chunks)
    return [
        Scenario(
            "health",
            "health: GET /health",
            Requests(["/health"]),
            lambda responses: status_problem(responses, 200),
        ),
        Scenario(
            "login",
            "login: POST /api/v1/auth/login",
            Requests(
                ["/api/v1/auth/login"],
                "POST",
                JSON_HEADERS,
                json.dumps(LOGIN).encode(),
            ),
            check_login,
            probe_health=True,
        ),
        Scenario(
            get_by_id.key,
            get_by_id.label,
            Requests(get_by_id.paths, headers=bearer),
            check_read(get_by_id),
        ),
        Scenario(
            "get_by_id_auth",
            "get_by_id_auth: the same, the baseline verifying the JWT and the roles too",
            Requests(get_by_id.paths, headers=bearer | {AUTHENTICATE_HEADER: "1"}),
            check_read(get_by_id),
        ),
        Scenario(
            listed.key, listed.label, Requests(listed.paths, headers=bearer), check_read(listed)
        ),
        Scenario(
            "create",
            "create: POST /api/v1/projects",
            Requests(
                ["/api/v1/projects"],
                "POST",
                bearer | JSON_HEADERS,
                json.dumps(CREATE).encode(),
            ),
            check_create,
        ),
        Scenario(
            "update",
            "update: PATCH /api/v1/projects/{id} with If-Match (a project per connection)",
            update := Requests([], "PATCH", bearer | JSON_HEADERS, json.dumps(UPDATE).encode()),
            no_check,
            writes=write_load("update", update),
        ),
        Scenario(
            "delete",
            "delete: DELETE /api/v1/projects/{id} (a live project each, 2 documents)",
            delete := Requests([], "DELETE", bearer),
            no_check,
            writes=write_load("delete", delete),
        ),
        Scenario(
            "upload",
            f"upload: POST /api/v1/files ({UPLOAD_BYTES // 1024} KiB, multipart)",
            Requests(
                ["/api/v1/files"],
                "POST",
                bearer | {"Content-Type": f"multipart/form-data; boundary={boundary}"},
                upload,
            ),
            check_upload(source, files_dir, upload),
            purge_uploads(files_dir, baseline_dir),
        ),
        Scenario(
            "upload_row",
            "upload_row: the same, the baseline verifying the JWT and storing the file with its row",
            Requests(
                ["/api/v1/files"],
                "POST",
                bearer
                | {
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    STORE_HEADER: "1",
                    AUTHENTICATE_HEADER: "1",
                },
                upload,
            ),
            check_upload(source, files_dir, None),
            purge_uploads(files_dir, baseline_dir),
        ),
    ]


def check_scenarios(clients: dict[str, httpx.Client], scenarios: list[Scenario]) -> None:
    """Every path of every scenario, sent as wrk will send it, to both servers."""
    for scenario in scenarios:
        if scenario.writes is not None:
            if (problem := scenario.writes.check(clients)) is not None:
                raise BenchError(f"{scenario.label}: {problem}")
            continue
        r = scenario.requests
        for path in r.paths:
            responses = {
                server: client.request(r.method, path, headers=r.headers, content=r.body)
                for server, client in clients.items()
            }
            if (problem := scenario.check(responses)) is not None:
                raise BenchError(f"{scenario.label}: {problem}")


# ---------------------------------------------------------------------------------------------
# Load


def tree(pid: int) -> list[int]:
    """A process and its descendants: the API's uvicorn workers."""
    process = psutil.Process(pid)
    return [pid, *(child.pid for child in process.children(recursive=True))]


@dataclass
class RunScripts:
    """The wrk script of each run of one scenario against one server: the static one, or for
    update and delete the one written after seeding the run's projects (what each run was
    given and used is kept for the report)."""

    scenario: Scenario
    server: str
    static: Path | None
    pools: dict[str, Any] = field(default_factory=dict)

    def script(self, phase: str, seconds: int, previous_rate: float | None) -> Path:
        writes = self.scenario.writes
        if writes is None:
            assert self.static is not None, "a scenario without writes has its one script"
            return self.static
        pool, script = writes.prepare(self.server, phase, seconds, previous_rate)
        self.pools[phase] = asdict(pool)
        return script

    def ran(self, phase: str, figures: dict[str, Any]) -> None:
        if (writes := self.scenario.writes) is not None:
            self.pools[phase] |= writes.verify(self.scenario.label, self.server, phase, figures)


def measure_http(
    scenario: Scenario,
    urls: dict[str, str],
    pids: dict[str, int],
    directory: Path,
    args: argparse.Namespace,
    profile_prefix: Path,
) -> dict[str, Any]:
    """Each server's unrecorded warm-up (pools fill, caches warm), then ``args.rounds`` rounds of
    one measured run of each, the product first in odd rounds and the baseline first in even
    ones, with the server's memory and CPU measured (and with ``--profile`` each server sampled
    by py-spy in the first round). update and delete seed their projects and write their script
    before each run, outside the measured time.

    A round's two runs are minutes apart at most, so their ratio is little moved by the
    machine's speed, which on a shared machine drifts over minutes: the scenario's ratio is the
    median of its rounds' ratios."""
    result: dict[str, Any] = {"label": scenario.label}
    static = None
    if scenario.writes is None:
        static = wrk_script(directory / f"{scenario.key}.lua", scenario.requests)
    scripts = {server: RunScripts(scenario, server, static) for server in SERVERS}
    warmups: dict[str, dict[str, Any]] = {}
    last_rate: dict[str, float | None] = dict.fromkeys(SERVERS)
    for server in SERVERS:
        if args.warmup:
            print(f"== {scenario.label}: {server} ({args.warmup} s warm-up)")
            warm = wrk(
                urls[server], scripts[server].script("warmup", args.warmup, None), args.warmup, args
            )
            scripts[server].ran("warmup", warm)
            warmups[server] = warm
            last_rate[server] = warm["per_second"]
            if scenario.after_run:
                scenario.after_run(server)
    runs: dict[str, list[dict[str, Any]]] = {server: [] for server in SERVERS}
    for number in range(1, args.rounds + 1):
        for server in SERVERS if number % 2 else SERVERS[::-1]:
            phase = "measured" if args.rounds == 1 else f"measured-{number}"
            print(f"== {scenario.label}: {server} ({phase}, {args.duration} s)")
            script = scripts[server].script(phase, args.duration, last_rate[server])
            memory = PeakRss([pids[server]], descendants=True)
            server_cpu = CpuPerRequest(pids[server])
            collapsed = Path(f"{profile_prefix}.{scenario.key}.{server}.collapsed")
            profiled = args.profile and number == 1
            with contextlib.ExitStack() as profiling:
                if profiled:
                    profiling.enter_context(sampled(pids[server], collapsed))
                with CpuMeter() as cpu, memory.watching(), server_cpu.measuring():
                    measured = wrk(urls[server], script, args.duration, args)
            scripts[server].ran(phase, measured)
            if scenario.after_run:
                scenario.after_run(server)
            last_rate[server] = measured["per_second"]
            run = measured | {
                "cpu_busy_pct": cpu.busy_pct,
                "steal_pct": cpu.steal_pct,
                "server_cpu_s": server_cpu.used_s,
                "server_system_cpu_s": server_cpu.system_s,
                **memory.summary(),
            }
            if scenario.probe_health:
                print(f"== {scenario.label}: {server} (/health probed, idle then under the load)")
                run["health"] = health_under_load(urls[server], script, args)
            runs[server].append(run)
            figures = server_cpu.figures(measured["requests"])
            print(
                f"   {cell(measured['per_second'])} req/s, p99 {cell(measured['p99_ms'], 2)} ms, "
                f"{cell(figures['cpu_us_per_request'], 0)} us CPU per request "
                f"({cell(figures['system_cpu_us_per_request'], 0)} in the kernel), "
                f"{errors_of(measured)} errors{stolen(cpu.steal_pct)}"
            )
            if profiled:
                summary = summarise(collapsed)
                run["profile"] = summary.as_dict() | {"collapsed": str(collapsed)}
                collapsed.with_suffix(".txt").write_text(summary.as_text())
                print(f"   profile: {collapsed.with_suffix('.txt')}")
    for server in SERVERS:
        warmup_errors = errors_of(warmups[server]) if server in warmups else 0
        probe_errors = sum(run["health"]["errors"] for run in runs[server] if "health" in run)
        result[server] = combined(runs[server]) | {
            "warmup_errors": warmup_errors,
            "errors": warmup_errors + probe_errors + sum(errors_of(run) for run in runs[server]),
            **({"projects": scripts[server].pools} if scripts[server].pools else {}),
        }
    round_ratios = [
        ratio(product["per_second"], baseline["per_second"])
        for product, baseline in zip(runs["product"], runs["baseline"], strict=True)
    ]
    result["round_ratios"] = round_ratios
    if scenario.probe_health:
        result["health_under_load"] = {server: health_figures(runs[server]) for server in SERVERS}
    result["product_per_baseline"] = median_or_none(round_ratios)
    result["cpu_product_per_baseline"] = ratio(
        result["product"]["cpu_us_per_request"], result["baseline"]["cpu_us_per_request"]
    )
    if args.rounds > 1:
        shown = ", ".join(cell(value, 2) for value in round_ratios)
        print(
            f"   product ÷ baseline by round: {shown}; median {cell(result['product_per_baseline'], 2)}"
        )
    return result


def health_under_load(base_url: str, script: Path, args: argparse.Namespace) -> dict[str, Any]:
    """/health probed idle, then during a run of the scenario's load of its own: the probe's
    requests take some of the CPU the load would have, so the scenario's measured run has
    none."""
    idle = probe_health(base_url, HEALTH_IDLE_S)
    with HealthProbe(base_url) as probe:
        load = wrk(base_url, script, args.duration, args)
    loaded = probe.summary()
    return {
        "idle": idle,
        "loaded": loaded,
        "p99_loaded_per_idle": ratio(loaded["p99_ms"], idle["p99_ms"]),
        "load_per_second": load["per_second"],
        "errors": idle["errors"] + loaded["errors"] + errors_of(load),
    }


def health_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One server's /health probes over its runs: the median of the runs' loaded ÷ idle p99,
    and of each percentile."""
    probes = [run["health"] for run in runs]
    return {
        "p99_loaded_per_idle": median_or_none([probe["p99_loaded_per_idle"] for probe in probes]),
        **{
            phase: {
                f"p{p}_ms": median_or_none([probe[phase][f"p{p}_ms"] for probe in probes])
                for p in (50, 95, 99)
            }
            for phase in ("idle", "loaded")
        },
    }


def stolen(steal_pct: float | None) -> str:
    """A run's host steal, where there was some worth a mention."""
    return f", host steal {steal_pct:.0f}%" if steal_pct is not None and steal_pct >= 1 else ""


def max_or_none(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return max(known) if known else None


def median_or_none(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One server's measured runs as one: requests, time and CPU summed (so the rate and the
    CPU per request are the runs' together), the highest memory, and each latency percentile
    the median of the runs' (wrk reports percentiles, not the histogram to merge)."""
    if len(runs) == 1:
        run = dict(runs[0])
        requests = run["requests"]
        cpu_s, system_s = run.pop("server_cpu_s"), run.pop("server_system_cpu_s")
        return run | {
            "server_cpu_s": round(cpu_s, 3),
            "cpu_us_per_request": per_request(cpu_s, requests),
            "system_cpu_us_per_request": per_request(system_s, requests),
        }
    requests = sum(run["requests"] for run in runs)
    elapsed_s = sum(run["elapsed_s"] for run in runs)
    cpu_s = sum(run["server_cpu_s"] for run in runs)
    system_s = sum(run["server_system_cpu_s"] for run in runs)
    return {
        "requests": requests,
        "elapsed_s": round(elapsed_s, 3),
        "per_second": requests / elapsed_s if elapsed_s else None,
        **{
            f"{p}_ms": statistics.median(run[f"{p}_ms"] for run in runs)
            for p in ("p50", "p90", "p95", "p99", "max")
        },
        "cpu_busy_pct": max(run["cpu_busy_pct"] for run in runs),
        "steal_pct": max_or_none([run.get("steal_pct") for run in runs]),
        "rss_before_load_mib": max(run["rss_before_load_mib"] for run in runs),
        "peak_rss_under_load_mib": max(run["peak_rss_under_load_mib"] for run in runs),
        "server_cpu_s": round(cpu_s, 3),
        "cpu_us_per_request": per_request(cpu_s, requests),
        "system_cpu_us_per_request": per_request(system_s, requests),
        "runs": runs,
    }


@dataclass(frozen=True)
class TaskSetup:
    """What the task round trip takes from the run's set-up."""

    engines: Engines
    base_url: str
    token: str
    api_pid: int
    env: dict[str, str]
    tmp: Path
    worker_concurrency: int
    log: Callable[[str], Path]


def measure_tasks(setup: TaskSetup, args: argparse.Namespace) -> dict[str, Any]:
    """No-op tasks end to end, with bench/tasks.py's phases: through the product's API to
    `tenantry worker`, then enqueued to bare arq; ``--workers`` worker processes each."""
    plan = Plan(
        tasks=args.tasks,
        warmup=TASK_WARMUP,
        clients=TASK_CLIENTS,
        timeout=TASK_TIMEOUT_S,
        idle=args.idle_tasks,
    )
    engines = setup.engines
    queue, done_key = f"{engines.queue_prefix}:baseline", f"{engines.queue_prefix}:baseline-done"
    label = f"tasks: noop task round trip ({args.tasks} tasks; tasks/s)"
    result: dict[str, Any] = {"label": label}
    for server in SERVERS:
        logs = [setup.log(f"{server}-worker-{i + 1}") for i in range(args.workers)]
        print(
            f"== {label}: {server}, {args.workers} worker(s) of {setup.worker_concurrency} jobs "
            f"(logs: {logs[0]} ...)"
        )
        if server == "product":
            command, name, env = tenantry("worker"), "tenantry worker", setup.env
        else:
            command = baseline_worker_command(engines, queue, done_key, setup.worker_concurrency)
            name = "baseline worker"
            env = {k: v for k, v in setup.env.items() if not k.startswith("TENANTRY_")}
        with workers(args.workers, command, name, env, setup.tmp, logs) as processes:
            pids = [p.pid for p in processes]
            alive = liveness(processes, logs, name)
            memory = PeakRss(pids, descendants=True)
            with memory.watching():
                if server == "product":
                    measured = measure_product(
                        setup.base_url, setup.token, engines, plan, pids, tree(setup.api_pid), alive
                    )
                else:
                    measured = measure_baseline(engines, queue, done_key, plan, pids, alive)
                figures = asyncio.run(measured)
        result[server] = figures | {
            "errors": 0,  # a failed submission or task stops the run
            "worker_exit_codes": [p.returncode for p in processes],
            "logs": [str(path) for path in logs],
            **memory.summary(),
        }
        print(
            f"   {cell(figures['per_second'])} tasks/s, p50 {cell(figures['p50_ms'])} ms; "
            f"idle p50 {cell(figures.get('idle_p50_ms'))} ms"
        )
    result["product_per_baseline"] = ratio(
        result["product"]["per_second"], result["baseline"]["per_second"]
    )
    return result


# ---------------------------------------------------------------------------------------------
# Set-up


@contextlib.contextmanager
def engines_for(args: argparse.Namespace, tmp: Path, run_id: str) -> Iterator[Engines]:
    """The given servers, or embedded ones started here for the whole run (Redis first: it is
    started with a preexec function, safe only before any thread exists)."""
    with contextlib.ExitStack() as stack:
        redis_url = args.redis_url
        if redis_url is None:
            redis = EmbeddedRedis(tmp / "redis", persist=False)
            print(f"== starting embedded Redis in {redis.root}")
            redis.start()
            stack.callback(redis.stop)
            redis_url = redis.url
        admin_url = args.database_url
        if admin_url is None:
            postgres = EmbeddedPostgres(tmp / "postgres")
            print(f"== starting embedded PostgreSQL in {postgres.root}")
            postgres.start()
            stack.callback(postgres.stop)
            admin_url = postgres.url()
        yield Engines(
            admin_url=admin_url,
            redis_url=redis_url,
            database=f"tenantry_bench_{run_id}",
            queue_prefix=f"tenantry-bench:{run_id}",
        )


async def citus_database(engines: Engines, workers: list[str]) -> None:
    """The run's database on each worker with Citus, and on the coordinator (the server of
    --database-url) with Citus and the workers added: docs/scaling.md's steps."""
    for worker in workers:
        admin = await asyncpg.connect(worker)
        try:
            await admin.execute(f'create database "{engines.database}"')
        finally:
            await admin.close()
        await execute_in(with_database(worker, engines.database), "create extension citus")
    coordinator = await asyncpg.connect(engines.url())
    try:
        await coordinator.execute("create extension citus")
        admin = make_url(engines.admin_url)
        await coordinator.execute(
            "select citus_set_coordinator_host($1, $2)", admin.host, admin.port or 5432
        )
        for worker in workers:
            url = make_url(worker)
            await coordinator.execute("select citus_add_node($1, $2)", url.host, url.port or 5432)
    finally:
        await coordinator.close()


async def drop_worker_database(worker: str, engines: Engines) -> None:
    await execute_in(worker, f'drop database if exists "{engines.database}" with (force)')


async def execute_in(url: str, sql: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def with_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


async def forget_keys(engines: Engines) -> None:
    """This run's keys (its queues, the baseline's list of done jobs), removed from a Redis
    that outlives the run; the product's login counters expire on their own."""
    redis = engines.redis()
    try:
        if keys := [key async for key in redis.scan_iter(match=f"{engines.queue_prefix}:*")]:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


def server_stack() -> str:
    """What both servers run on: uvicorn picks uvloop and httptools when they are installed."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"uvicorn {installed('uvicorn')} ({loop}, {http})"


def git_commit() -> str:
    """The commit measured, and whether the tree differed from it."""

    def git(*arguments: str) -> str:
        return subprocess.run(  # noqa: S603 - a command line of our own, no shell
            ["git", *arguments],  # noqa: S607 - git from PATH
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit} with uncommitted changes" if dirty else commit


def run(args: argparse.Namespace, stamp: str) -> dict[str, Any]:
    machine, version = describe_wrk_run(args)
    chosen = [key for key in SCENARIOS if key in args.scenarios]  # always in SCENARIOS' order

    def log(name: str) -> Path:
        return RESULTS_DIR / f"suite-{stamp}.{name}.log"

    run_id = secrets.token_hex(4)
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        tmp = Path(
            stack.enter_context(
                tempfile.TemporaryDirectory(prefix="tenantry-bench-", ignore_cleanup_errors=True)
            )
        )
        # Unwound in reverse: the servers stop, then the database and our Redis keys go, then
        # the engines.
        engines = stack.enter_context(engines_for(args, tmp, run_id))
        versions = asyncio.run(check_engines(engines))
        print(
            f"engines: PostgreSQL {versions['postgresql']} at {redact_url(engines.admin_url)}, "
            f"Redis {versions['redis']} at {redact_url(engines.redis_url)}"
        )
        stack.callback(lambda: asyncio.run(forget_keys(engines)))
        asyncio.run(admin_execute(engines, f'create database "{engines.database}"'))
        stack.callback(
            lambda: asyncio.run(
                admin_execute(engines, f'drop database if exists "{engines.database}" with (force)')
            )
        )
        if args.citus_worker:
            print(f"== Citus: the database on the coordinator and {len(args.citus_worker)} workers")
            asyncio.run(citus_database(engines, args.citus_worker))
            for worker in args.citus_worker:
                stack.callback(
                    lambda worker=worker: asyncio.run(drop_worker_database(worker, engines))
                )

        port, baseline_port = free_port(), free_port()
        urls = {"product": f"http://{HOST}:{port}", "baseline": f"http://{HOST}:{baseline_port}"}
        env = product_env(engines, tmp, port) | {
            "TENANTRY_STORAGE_BACKEND": "local",
            "TENANTRY_TENANT_QUOTA_BYTES": str(TENANT_QUOTA_BYTES),
            "TENANTRY_CPU_PINNING": str(args.cpu_pinning).lower(),
        }
        settings = load_settings(environ=env, env_file=None)
        print(f"== database {engines.database}: keyring, migrations (log: {log('setup')})")
        run_setup_command(tenantry("keys", "rotate"), env, tmp, log("setup"))
        # Migrations run as the owner; they create the app role the servers use.
        owner_env = env | {"TENANTRY_DATABASE_URL": engines.url()}
        run_setup_command(tenantry("db", "upgrade"), owner_env, tmp, log("setup"))
        if args.citus_worker:
            run_setup_command(tenantry("db", "distribute"), owner_env, tmp, log("setup"))
        print(
            f"== seeding {SEED_TENANTS} tenants x {SEED_PROJECTS} projects x {SEED_DOCUMENTS} "
            f"documents (log: {log('seed')})"
        )
        print(f"   seeded in {seed(env, tmp, log('seed')):.1f} s")

        command = tenantry("serve", f"--port={port}", f"--workers={args.workers}")
        print(f"== starting {shlex.join(command[2:])} on {urls['product']} (log: {log('product')})")
        product = stack.enter_context(
            running(command, name="tenantry serve", env=env, cwd=tmp, log_path=log("product"))
        )
        ready_s = {"product": wait_ready(product, urls["product"], log("product"), "product")}
        print(f"   ready after {ready_s['product']:.1f} s")
        with httpx.Client(base_url=urls["product"], timeout=REQUEST_TIMEOUT_S) as client:
            token, tenant_id, ids = sign_in(client)
            owner_id = get_json(client, "/api/v1/auth/me", "product")["id"]

        baseline_dir = tmp / "baseline-uploads"
        baseline_dir.mkdir()
        if args.against == "governance-off":
            command = tenantry("serve", f"--port={baseline_port}", f"--workers={args.workers}")
            baseline_env = env | GOVERNANCE_OFF
            name = "tenantry serve, governance off"
        else:
            command = [
                sys.executable,
                str(BASELINE_APP),
                f"--port={baseline_port}",
                f"--dsn={engines.url(APP_ROLE)}",
                f"--tenant-id={tenant_id}",
                f"--owner-id={owner_id}",
                f"--upload-dir={baseline_dir}",
                f"--hash-concurrency={settings.password_hash_concurrency}",
                f"--workers={args.workers}",
                f"--keyring={keyring_file(settings)}",
                *([f"--cpu-claims={tmp / 'baseline-cpus'}"] if args.cpu_pinning else []),
            ]
            # Without TENANTRY_* variables, though it reads none.
            baseline_env = {k: v for k, v in env.items() if not k.startswith("TENANTRY_")}
            name = "baseline"
        print(f"== starting the {name} on {urls['baseline']} (log: {log('baseline')})")
        baseline = stack.enter_context(
            running(command, name=name, env=baseline_env, cwd=tmp, log_path=log("baseline"))
        )
        ready_s["baseline"] = wait_ready(baseline, urls["baseline"], log("baseline"), "baseline")
        print(f"   ready after {ready_s['baseline']:.1f} s")

        files_dir = tmp / "data" / "files"  # the local storage's default root
        machine["upload_filesystem"] = describe_filesystem(tmp)
        uploading = not {"upload", "upload_row"}.isdisjoint(chosen)
        if uploading and machine["upload_filesystem"]["journal"] is False:
            print(
                f"   warning: {tmp} is on ext4 without a journal: upload figures depend on the "
                "files deleted there in the last minutes (TMPDIR on a journaled filesystem "
                "avoids it; bench/README.md)"
            )
        source = generate(tmp / "upload.txt", UPLOAD_BYTES, REQUEST_TIMEOUT_S)
        seeder = Seeder(engines, tenant_id, owner_id)

        def write_load(kind: Kind, requests: Requests) -> WriteLoad:
            return WriteLoad(kind, requests, seeder, tmp / "wrk", args)

        scenarios = [
            s
            for s in http_scenarios(token, ids, source, files_dir, baseline_dir, write_load)
            if s.key in chosen
        ]
        with contextlib.ExitStack() as clients:
            check_scenarios(
                {
                    server: clients.enter_context(
                        httpx.Client(base_url=urls[server], timeout=REQUEST_TIMEOUT_S)
                    )
                    for server in SERVERS
                },
                scenarios,
            )
        print("   both servers answer every scenario as expected")

        pids = {"product": product.pid, "baseline": baseline.pid}
        for scenario in scenarios:
            results[scenario.key] = measure_http(
                scenario, urls, pids, tmp / "wrk", args, RESULTS_DIR / f"suite-{stamp}"
            )
        if "tasks" in chosen:
            setup = TaskSetup(
                engines=engines,
                base_url=urls["product"],
                token=token,
                api_pid=product.pid,
                env=env,
                tmp=tmp,
                worker_concurrency=settings.worker_concurrency,
                log=log,
            )
            results["tasks"] = measure_tasks(setup, args)
    exit_codes = {"product": product.returncode, "baseline": baseline.returncode}
    print(f"== servers stopped with exit codes {exit_codes}")

    return {
        "timestamp": stamp,
        "command": command_line(),
        "commit": git_commit(),
        "against": args.against,
        "server_stack": server_stack(),
        "machine": machine,
        "options": {
            k: redact_url(v) if k.endswith("_url") and v else v for k, v in vars(args).items()
        },
        "engines": versions
        | {
            "embedded_postgresql": args.database_url is None,
            "embedded_redis": args.redis_url is None,
            "database": engines.database,
        },
        "load_generator": load_generator(args, version),
        "seed": {
            "tenants": SEED_TENANTS,
            "projects_per_tenant": SEED_PROJECTS,
            "documents_per_project": SEED_DOCUMENTS,
            "tenant": LOGIN["tenant"],
        },
        "settings": {
            "password_hash_concurrency": settings.password_hash_concurrency,
            "worker_concurrency": settings.worker_concurrency,
            "upload_bytes": UPLOAD_BYTES,
        },
        "servers": {
            server: {"ready_s": round(ready_s[server], 2), "exit_code": exit_codes[server]}
            | {"log": str(log(server))}
            for server in SERVERS
        },
        "scenarios": results,
        "notes": NOTES,
    }


# ---------------------------------------------------------------------------------------------
# Report


def command_line() -> str:
    """How this run was started, as one would type it (passwords of URLs hidden)."""
    return shlex.join(["uv", "run", "python", "bench/suite.py", *map(redact_url, sys.argv[1:])])


def latencies(result: dict[str, Any]) -> str:
    return " / ".join(cell(result[f"{p}_ms"], 1) for p in ("p50", "p95", "p99"))


def cpu_per_request(result: dict[str, Any]) -> str:
    # The task round trip is measured by bench/tasks.py, which has no such figure.
    return cell(result.get("cpu_us_per_request"), 0)


def ratio_cell(scenario: dict[str, Any]) -> str:
    """The scenario's ratio and, over several rounds, the range of the rounds' ratios: how far
    the machine moved while it ran."""
    shown = cell(scenario["product_per_baseline"], 2)
    rounds = [value for value in scenario.get("round_ratios", []) if value is not None]
    if len(rounds) > 1:
        shown += f" ({cell(min(rounds), 2)}-{cell(max(rounds), 2)})"
    return shown


def markdown_table(report: dict[str, Any]) -> str:
    other = "governance off" if report.get("against") == "governance-off" else "baseline"
    lines = [
        f"| Scenario | product req/s | {other} req/s | product ÷ {other} "
        f"| product p50 / p95 / p99 ms | {other} p50 / p95 / p99 ms | product peak MiB "
        f"| {other} peak MiB | CPU µs per request (product / {other}) "
        f"| errors (product / {other}) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in report["scenarios"].values():
        p, b = scenario["product"], scenario["baseline"]
        lines.append(
            f"| {scenario['label']} | {cell(p['per_second'])} | {cell(b['per_second'])} "
            f"| {ratio_cell(scenario)} | {latencies(p)} | {latencies(b)} "
            f"| {cell(p['peak_rss_under_load_mib'])} | {cell(b['peak_rss_under_load_mib'])} "
            f"| {cpu_per_request(p)} / {cpu_per_request(b)} "
            f"| {p['errors']} / {b['errors']} |"
        )
        if health := scenario.get("health_under_load"):
            shown = [
                ", ".join(
                    f"{phase} " + " / ".join(cell(h[phase][f"p{q}_ms"], 1) for q in (50, 95, 99))
                    for phase in ("idle", "loaded")
                )
                for h in (health["product"], health["baseline"])
            ]
            lines.append(
                "| health under the login load: GET /health, one at a time, 10 ms apart "
                "(p99 loaded ÷ idle, product / baseline) | - | - "
                f"| {cell(health['product']['p99_loaded_per_idle'], 2)} / "
                f"{cell(health['baseline']['p99_loaded_per_idle'], 2)} "
                f"| {shown[0]} | {shown[1]} | - | - | - | - |"
            )
        if "idle_p50_ms" in p:
            # The task round trip's idle phase: latency alone, one task at a time.
            idle = [
                " / ".join(cell(r[f"idle_{q}_ms"], 1) for q in ("p50", "p95", "p99"))
                for r in (p, b)
            ]
            lines.append(
                f"| tasks, idle: {p['idle_tasks']} single tasks one at a time (latency) | - | - "
                f"| {cell(ratio(p['idle_p50_ms'], b['idle_p50_ms']), 2)} (p50) | {idle[0]} "
                f"| {idle[1]} | - | - | - | - |"
            )
    return "\n".join(lines)


def context(report: dict[str, Any]) -> str:
    """Where and how the figures were made, in a few lines."""
    machine, options, engines = report["machine"], report["options"], report["engines"]
    measured = datetime.strptime(report["timestamp"], STAMP_FORMAT)
    where = {True: "embedded", False: "server"}
    return "\n".join(
        [
            f"- Machine: {machine['nproc']} CPUs, {machine['cpu_model']}, {machine['python']}, "
            f"{machine['platform']}",
            f"- Other load before starting: {cell(machine['background_cpu_busy_pct'], 0)}% CPU busy",
            *steal_line(report),
            *filesystem_line(machine.get("upload_filesystem")),
            f"- Engines: PostgreSQL {engines['postgresql']} "
            f"({where[engines['embedded_postgresql']]}), Redis {engines['redis']} "
            f"({where[engines['embedded_redis']]})",
            f"- Load: {report['load_generator']['tool'].split(' Copyright')[0]}, "
            f"{options['connections']} connections, {options['threads']} thread(s), "
            f"{options['duration']} s runs after {options['warmup']} s warm-ups"
            + (
                f", {options['rounds']} rounds (the ratio: their median)"
                if options.get("rounds", 1) > 1
                else ""
            ),
            f"- Servers: {report['server_stack']}, {options['workers']} API process(es) each"
            + (", each on a CPU of its own" if options.get("cpu_pinning") else "")
            + ", as many task workers",
            f"- Commit {report['commit']}, measured {measured:%Y-%m-%d %H:%M} UTC",
            f"- Command: `{report['command']}`",
        ]
    )


def steal_line(report: dict[str, Any]) -> list[str]:
    """The host's steal over the measured HTTP runs, the most any one saw (none for older
    reports, or where the kernel counts none)."""
    steals = [
        run["steal_pct"]
        for scenario in report["scenarios"].values()
        for server in SERVERS
        if server in scenario
        # One round's run is its server's result itself.
        for run in scenario[server].get("runs") or [scenario[server]]
        if run.get("steal_pct") is not None
    ]
    if not steals:
        return []
    return [
        f"- Host steal during the measured runs: at most {max(steals):.1f}% of the CPUs' time "
        f"(median {statistics.median(steals):.1f}%)"
    ]


def filesystem_line(filesystem: dict[str, Any] | None) -> list[str]:
    """Where the run's files went, as the context's line (none for older reports)."""
    if filesystem is None:
        return []
    kind = {True: "ext4 with a journal", False: "ext4 without a journal", None: "not ext4"}
    return [f"- Files (uploads): {filesystem['device']}, {kind[filesystem['journal']]}"]


def write_docs(report: dict[str, Any]) -> None:
    """Put the table and its context between the markers of docs/performance.md."""
    block = "\n\n".join([DOCS_BEGIN, context(report), markdown_table(report), DOCS_END])
    page = DOCS.read_text() if DOCS.exists() else ""
    if DOCS_BEGIN in page and DOCS_END in page:
        before, rest = page.split(DOCS_BEGIN, 1)
        page = before + block + rest.split(DOCS_END, 1)[1]
    else:
        page = f"# Performance\n\n{block}\n"
    DOCS.write_text(page)
    print(f"\nwrote {DOCS}")


def report_suite(report: dict[str, Any], _stamp: str) -> bool:
    print(markdown_table(report))
    print()
    print(context(report))
    print()
    print("\n".join(f"- {note}" for note in report["notes"]))
    held = True
    for scenario in report["scenarios"].values():
        for server in SERVERS:
            if count := scenario[server]["errors"]:
                held = False
                print(
                    f"\n{scenario['label']}: {server} had {count} failed requests; "
                    f"see {report['servers'][server]['log']}"
                )
            if any(scenario[server].get("worker_exit_codes", ())):
                held = False
                print(f"\n{scenario['label']}: a {server} worker did not exit 0 after SIGINT")
    for server, details in report["servers"].items():
        if details["exit_code"] != 0:
            held = False
            print(f"\n{server} exited with {details['exit_code']}: see {details['log']}")
    if report["options"]["write_docs"]:
        if held:
            write_docs(report)
        else:
            print(f"\n{DOCS} left as it was: the run failed")
    return held


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="API processes of the product and of the baseline, and task workers (default 1)",
    )
    parser.add_argument(
        "--cpu-pinning",
        action="store_true",
        help="each API process of both servers on one CPU of its own (the product's "
        "TENANTRY_CPU_PINNING; the baseline's --cpu-claims), their password hashes on every CPU",
    )
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL superuser's URL to use instead of an embedded server, e.g. "
        "postgresql://postgres@127.0.0.1:5432/postgres (a fresh database is created and dropped)",
    )
    parser.add_argument(
        "--citus-worker",
        action="append",
        default=[],
        metavar="URL",
        help="a Citus worker's superuser URL (repeat for each); --database-url is then the "
        "coordinator, and the run's database is distributed by tenant (docs/scaling.md)",
    )
    parser.add_argument(
        "--redis-url",
        help="a Redis database to use instead of an embedded server, e.g. redis://127.0.0.1:6379/11",
    )
    add_wrk_arguments(parser)
    parser.add_argument(
        "--tasks", type=int, default=500, help="measured tasks of the task round trip (default 500)"
    )
    parser.add_argument(
        "--idle-tasks",
        type=int,
        default=20,
        help="tasks then submitted one at a time to idle workers, for their latency (default 20)",
    )
    parser.add_argument(
        "--scenarios",
        type=lambda text: [s.strip() for s in text.split(",") if s.strip()],
        default=list(SCENARIOS),
        help=f"comma-separated, of {','.join(SCENARIOS)} (default all)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measured runs of each server per HTTP scenario, alternating which goes first; "
        "the ratio is the median of the rounds' (default 1)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample each server with py-spy during its first measured HTTP run and write where "
        "its CPU went to bench/results/suite-<timestamp>.<scenario>.<server>.txt",
    )
    parser.add_argument(
        "--against",
        choices=("baseline", "governance-off"),
        default="baseline",
        help="what the product is measured against: the bare baseline (default), or itself "
        f"with {', '.join(GOVERNANCE_OFF)} (the cost of governance on the hot path; scenarios "
        f"{','.join(GOVERNED_SCENARIOS)})",
    )
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help=f"rewrite the table of {DOCS.relative_to(ROOT)} when the run succeeds",
    )
    args = parser.parse_args()
    if unknown := set(args.scenarios) - set(SCENARIOS):
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {','.join(SCENARIOS)}")
    if args.against == "governance-off":
        if args.write_docs:
            parser.error("--write-docs records runs against the baseline only")
        if args.scenarios == list(SCENARIOS):
            args.scenarios = list(GOVERNED_SCENARIOS)
        if odd := set(args.scenarios) - set(GOVERNED_SCENARIOS):
            parser.error(
                f"--against governance-off measures {','.join(GOVERNED_SCENARIOS)}, "
                f"not {sorted(odd)}"
            )
    if (
        bad_wrk_arguments(args)
        or args.workers < 1
        or args.rounds < 1
        or args.tasks < 1
        or args.idle_tasks < 0
        or not args.scenarios
    ):
        parser.error(
            "--duration, --workers, --rounds and --tasks must be at least 1, --warmup and --idle-tasks at "
            "least 0, "
            "a scenario given, and 1 <= threads <= connections"
        )
    return args


def main() -> int:
    args = parse_args()
    return bench_main("suite", lambda stamp: run(args, stamp), report_suite)


if __name__ == "__main__":
    sys.exit(main())

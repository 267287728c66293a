"""Tasks benchmark: end-to-end throughput of the `noop` task, against bare arq, 1 and 2 workers.

Uses the PostgreSQL and Redis servers of 127.0.0.1: a fresh database, migrated, then
`tenantry serve` and `tenantry worker` processes as the app role. Submits no-op tasks through
the API as fast as a few clients can and times them until every row is completed; then the same
with bench/baseline_arq.py, a bare arq worker, on the same Redis. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import psutil
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from common import (
    CONNECT_TIMEOUT_S,
    HOST,
    READY_POLL_S,
    READY_TIMEOUT_S,
    REQUEST_TIMEOUT_S,
    RESULTS_DIR,
    BenchError,
    CpuMeter,
    Engines,
    admin_execute,
    background_load,
    bench_main,
    cell,
    check_engines,
    describe_machine,
    free_port,
    log_tail,
    percentile,
    product_environment,
    ratio,
    running,
    tenantry,
    until,
    wait_ready,
)
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tenantry.config import load_settings
from tenantry.infrastructure.db.rls import APP_ROLE

BASELINE_WORKER = Path(__file__).resolve().parent / "baseline_arq.py"
POSTGRES_PORT = 5432
REDIS_PORT = 6379
# A Redis database of its own: flushed at the start and at the end of every run.
REDIS_DB = 11
ADMIN_ROLE = "postgres"
SETUP_TIMEOUT_S = 120.0
# How often completion is polled. The figures do not depend on it: the end of a run is the
# latest completion time written by the workers, not when the poll saw it.
POLL_S = 0.05
# The idle phase's: its latencies are a few ms where the product wakes its workers.
IDLE_POLL_S = 0.01
# Before each idle task, a pause of at least this long once the last one completed (the worker
# back to waiting), plus a random part as long as arq's poll_delay, so that submissions fall
# anywhere in a worker's poll interval rather than always just after its last poll.
IDLE_PAUSE_S = 0.05
ARQ_POLL_DELAY_S = 0.5
# After the last completion arq still removes the job from its queue; a drained queue is empty.
DRAIN_TIMEOUT_S = 10.0
# Both arq and the product log this when a worker starts polling its queue.
WORKER_READY_LINE = "Starting worker for"
WORKER_COUNTS = (1, 2)
SCENARIOS = ("product", "baseline")
PASSWORD = "correct horse battery 9"
TENANT = {
    "name": "Bench",
    "slug": "bench",
    "owner": {"username": "bench", "email": "bench@bench.example", "password": PASSWORD},
}
LOGIN = {"tenant": "bench", "login": "bench@bench.example", "password": PASSWORD}
NOOP = {"type": "noop"}
NOTES = [
    "tasks/s end to end = tasks / (latest completion - first submission). The product's "
    "completions are the rows' completed_at, read with asyncpg as postgres in a read-only "
    "session (polled for count(*) ... where status = 'completed' every "
    f"{POLL_S * 1000:.0f} ms); the baseline's are the times its jobs wrote to a Redis list.",
    "Latency per task: the product's completed_at - created_at (the row is created inside the "
    "POST); the baseline's completion - arq's enqueue time.",
    "Idle latency: after the throughput batch, --idle tasks submitted one at a time, each "
    f"after the last completed and a pause of {IDLE_PAUSE_S * 1000:.0f} ms plus a random "
    f"0-{ARQ_POLL_DELAY_S * 1000:.0f} ms (so that it lands anywhere in a poll interval), "
    "latency as above.",
    "A product task is a POST (JWT, role check, insert, commit, enqueue and a wake-up "
    "published to the workers, an access log line), then in the worker two transactions of "
    "one statement each (start; the attempt's log row and the finish) and four log lines; a "
    "baseline job is one RPUSH and arq's two log lines. Both use arq with the same max_jobs, "
    "keep_result=0 and poll_delay of 0.5 s; the baseline polls only then, which with arq's "
    "read limit of 100 job ids per poll caps a worker near 200 fast jobs/s, while the "
    "product's workers also poll when woken (a job announced, a slot freed after a full poll).",
    "Clients, API, workers, PostgreSQL and Redis share the machine's CPUs; CPU busy % is the "
    "whole machine's.",
]


# ---------------------------------------------------------------------------------------------
# Engines: the servers of 127.0.0.1, a fresh database, a Redis database of our own


async def flush_redis(engines: Engines) -> int:
    """Empty our Redis database; how many keys it held."""
    redis = engines.redis()
    try:
        keys = int(await redis.dbsize())
        await redis.flushdb()
    finally:
        await redis.aclose()
    return keys


def run_setup_command(arguments: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
    """A one-off `tenantry` command, its output appended to the set-up log."""
    with log.open("ab") as output:
        try:
            done = subprocess.run(  # noqa: S603 - a command line of our own, no shell
                arguments,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=SETUP_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise BenchError(
                f"{' '.join(arguments[1:])} took over {SETUP_TIMEOUT_S:.0f} s"
            ) from None
    if done.returncode != 0:
        raise BenchError(
            f"{' '.join(arguments[1:])} exited with {done.returncode}:\n" + log_tail(log)
        )


def product_env(engines: Engines, tmp: Path, port: int) -> dict[str, str]:
    """No inherited TENANTRY_* variable (common.product_environment), raised login limits,
    production mode, and our servers, queue and keyring."""
    return product_environment(tmp / "data", port) | {
        "TENANTRY_ENV": "production",
        "TENANTRY_DATABASE_URL": engines.url(APP_ROLE),
        "TENANTRY_REDIS_URL": engines.redis_url,
        "TENANTRY_TASK_QUEUE_NAME": f"{engines.queue_prefix}:tasks",
        "TENANTRY_KEYRING_PATH": str(tmp / "keyring.json"),
    }


# ---------------------------------------------------------------------------------------------
# Processes


def wait_for_line(process: subprocess.Popen[bytes], log_path: Path, line: str, name: str) -> None:
    """Until ``line`` shows in the process's log: a worker is polling its queue."""
    for _ in until(time.monotonic() + READY_TIMEOUT_S):
        if process.poll() is not None:
            raise BenchError(
                f"{name} exited with {process.returncode} before it was ready:\n"
                + log_tail(log_path)
            )
        if line in log_path.read_text(errors="replace"):
            return
        time.sleep(READY_POLL_S)
    raise BenchError(
        f"{name} did not log {line!r} within {READY_TIMEOUT_S:.0f} s:\n" + log_tail(log_path)
    )


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far."""
    try:
        return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)
    except psutil.Error as error:
        raise BenchError(f"a process under test is gone: {error!r}") from None


def liveness(
    processes: list[subprocess.Popen[bytes]], logs: list[Path], name: str
) -> Callable[[], None]:
    """A check that fails the run as soon as a worker exits, rather than at the timeout."""

    def alive() -> None:
        for i, process in enumerate(processes):
            if process.poll() is not None:
                raise BenchError(
                    f"{name} {i + 1} exited with {process.returncode} mid-run:\n"
                    + log_tail(logs[i])
                )

    return alive


@contextlib.contextmanager
def workers(
    count: int, command: list[str], name: str, env: dict[str, str], cwd: Path, logs: list[Path]
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` worker processes, each ready; all stopped with SIGINT when the block ends."""
    with contextlib.ExitStack() as stack:
        processes = [
            stack.enter_context(
                running(command, name=f"{name} {i + 1}", env=env, cwd=cwd, log_path=logs[i])
            )
            for i in range(count)
        ]
        for i, process in enumerate(processes):
            wait_for_line(process, logs[i], WORKER_READY_LINE, f"{name} {i + 1}")
        yield processes


# ---------------------------------------------------------------------------------------------
# Load: submission and completion


@dataclass
class Submission:
    ids: list[str] = field(default_factory=list)
    started_wall: float = 0.0  # Unix time of the first submission, to compare with completions
    seconds: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)
    # The first response body or exception of each kind of failure, to report it as seen.
    examples: dict[str, str] = field(default_factory=dict)

    def fail(self, kind: str, example: str) -> None:
        self.failures[kind] += 1
        self.examples.setdefault(kind, example[:500])

    def check(self, what: str) -> None:
        if self.failures:
            seen = "; ".join(
                f"{count} x {kind}, first: {self.examples[kind]}"
                for kind, count in self.failures.items()
            )
            raise BenchError(f"{sum(self.failures.values())} {what} failed: {seen}")


Send = Callable[[Submission], Awaitable[None]]


async def submit(count: int, senders: list[Send], deadline: float) -> Submission:
    """``count`` submissions by concurrent senders, each sending back to back, by ``deadline``
    (time.monotonic(), which is also the event loop's clock)."""
    submission = Submission()
    numbers = iter(range(count))  # shared: each sender takes the next number

    async def loop(send: Send) -> None:
        for _ in numbers:
            await send(submission)

    submission.started_wall = time.time()
    started = time.perf_counter()
    try:
        async with asyncio.timeout_at(deadline):
            await asyncio.gather(*(loop(send) for send in senders))
    except TimeoutError:
        raise BenchError(
            f"submitting {count} took longer than --timeout ({len(submission.ids)} done)"
        ) from None
    submission.seconds = time.perf_counter() - started
    return submission


def api_sender(client: httpx.AsyncClient) -> Send:
    """POST /api/v1/tasks on the client's connection; only 202 with an id counts."""

    async def send(submission: Submission) -> None:
        try:
            response = await client.post("/api/v1/tasks", json=NOOP)
            body = response.json() if response.status_code == 202 else {}
        except (httpx.HTTPError, ValueError) as error:
            submission.fail(type(error).__name__, repr(error))
            return
        if "id" in body:
            submission.ids.append(body["id"])
        else:
            submission.fail(f"HTTP {response.status_code}", response.text)

    return send


def arq_sender(pool: ArqRedis) -> Send:
    async def send(submission: Submission) -> None:
        try:
            job = await pool.enqueue_job("noop")
        except (RedisError, OSError) as error:
            submission.fail(type(error).__name__, repr(error))
            return
        if job is None:  # arq returns None when the job id is already queued
            submission.fail("not enqueued", "enqueue_job returned None")
        else:
            submission.ids.append(job.job_id)

    return send


STATUS_COUNTS = "select status, count(*) as n from tasks where id = any($1::uuid[]) group by status"
FIRST_FAILURE = (
    "select id, status, error_message, retry_count from tasks "
    "where id = any($1::uuid[]) and status in ('failed', 'cancelled') limit 1"
)
TIMES = "select created_at, completed_at from tasks where id = any($1::uuid[])"


async def rows_completed(
    monitor: asyncpg.Connection,
    ids: list[UUID],
    deadline: float,
    alive: Callable[[], None],
    poll: float = POLL_S,
) -> None:
    """Until every row is completed; a failed or cancelled one, a worker's exit or the timeout
    stops the run."""
    counts: dict[str, int] = {}
    for _ in until(deadline):
        alive()
        counts = {row["status"]: row["n"] for row in await monitor.fetch(STATUS_COUNTS, ids)}
        if counts.get("failed") or counts.get("cancelled"):
            first = await monitor.fetchrow(FIRST_FAILURE, ids)
            raise BenchError(f"tasks did not complete: {counts}; first: {dict(first or {})}")
        if counts.get("completed") == len(ids):
            return
        await asyncio.sleep(poll)
    raise BenchError(f"after --timeout, of {len(ids)} tasks by status: {counts}")


async def list_filled(
    redis: Redis,
    key: str,
    count: int,
    queue: str,
    deadline: float,
    alive: Callable[[], None],
    poll: float = POLL_S,
) -> None:
    """Until the baseline's jobs have written ``count`` entries."""
    length = 0
    for _ in until(deadline):
        alive()
        if (length := int(await redis.llen(key))) >= count:
            return
        await asyncio.sleep(poll)
    queued = await redis.zcard(queue)
    raise BenchError(
        f"after --timeout, {length} of {count} baseline jobs done, {queued} still queued"
    )


async def drained(redis: Redis, queue: str) -> None:
    """Until arq's queue (a sorted set) is empty: the next phase starts from nothing."""
    for _ in until(time.monotonic() + DRAIN_TIMEOUT_S):
        if not await redis.zcard(queue):
            return
        await asyncio.sleep(POLL_S)
    raise BenchError(
        f"{await redis.zcard(queue)} jobs still in {queue} {DRAIN_TIMEOUT_S:.0f} s after "
        "every task completed"
    )


def figures(
    submission: Submission, done: list[tuple[float, float]], count: int
) -> dict[str, float | None]:
    """From (submitted, completed) Unix times per task: the end-to-end rate and latencies."""
    latencies = sorted((end - start) * 1000 for start, end in done)
    elapsed = max(end for _, end in done) - submission.started_wall
    return {
        "elapsed_s": round(elapsed, 3),
        "per_second": count / elapsed if elapsed > 0 else None,
        "submit_per_second": count / submission.seconds if submission.seconds else None,
        "submit_s": round(submission.seconds, 3),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1],
    }


@dataclass(frozen=True)
class Plan:
    tasks: int
    warmup: int
    clients: int
    timeout: float
    # Tasks submitted one at a time to idle workers, after the batch; 0 for none.
    idle: int = 0


async def idle_latencies(
    count: int, one: Callable[[], Awaitable[tuple[float, float]]]
) -> dict[str, Any]:
    """``count`` single tasks, each submitted once the last completed and a pause passed
    (IDLE_PAUSE_S plus a random part of arq's poll delay): the latency of a task that finds
    its workers idle. ``one`` submits a task and returns its (submitted, completed) Unix times
    once it completed."""
    if not count:
        return {}
    done = []
    pause = secrets.SystemRandom()
    for _ in range(count):
        await asyncio.sleep(IDLE_PAUSE_S + pause.uniform(0, ARQ_POLL_DELAY_S))
        done.append(await one())
    latencies = sorted((end - start) * 1000 for start, end in done)
    return {
        "idle_tasks": count,
        "idle_p50_ms": percentile(latencies, 50),
        "idle_p95_ms": percentile(latencies, 95),
        "idle_p99_ms": percentile(latencies, 99),
        "idle_max_ms": latencies[-1],
    }


async def measure_product(
    base_url: str,
    token: str,
    engines: Engines,
    plan: Plan,
    pids: list[int],
    api_pids: list[int],
    alive: Callable[[], None],
) -> dict[str, Any]:
    """A warm-up batch, then ``plan.tasks`` no-op tasks through the API until all completed."""
    queue = f"{engines.queue_prefix}:tasks"
    # As the admin, whom row level security does not hold, in a session that cannot write.
    monitor = await asyncpg.connect(
        engines.url(),
        timeout=CONNECT_TIMEOUT_S,
        server_settings={"default_transaction_read_only": "on"},
    )
    redis = engines.redis()
    headers = {"Authorization": f"Bearer {token}"}
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(monitor.close)
        stack.push_async_callback(redis.aclose)
        # Each client its own connection, as separate users' would be.
        senders = [
            api_sender(
                await stack.enter_async_context(
                    httpx.AsyncClient(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT_S)
                )
            )
            for _ in range(plan.clients)
        ]

        async def batch(
            count: int, poll: float = POLL_S, by: list[Send] = senders
        ) -> tuple[Submission, list[UUID]]:
            submission = await submit(count, by, time.monotonic() + plan.timeout)
            submission.check("task submissions")
            ids = [UUID(i) for i in submission.ids]
            await rows_completed(monitor, ids, time.monotonic() + plan.timeout, alive, poll)
            await drained(redis, queue)
            return submission, ids

        async def one() -> tuple[float, float]:
            _, ids = await batch(1, IDLE_POLL_S, senders[:1])
            [row] = await monitor.fetch(TIMES, ids)
            return row["created_at"].timestamp(), row["completed_at"].timestamp()

        if plan.warmup:
            await batch(plan.warmup)
        api_cpu, workers_cpu = cpu_seconds(api_pids), cpu_seconds(pids)
        with CpuMeter() as cpu:
            submission, ids = await batch(plan.tasks)
        rows = await monitor.fetch(TIMES, ids)
        measured = {
            "cpu_busy_pct": cpu.busy_pct,
            "workers_cpu_s": round(cpu_seconds(pids) - workers_cpu, 2),
            "api_cpu_s": round(cpu_seconds(api_pids) - api_cpu, 2),
        }
        idle = await idle_latencies(plan.idle, one)
    done = [(r["created_at"].timestamp(), r["completed_at"].timestamp()) for r in rows]
    return figures(submission, done, plan.tasks) | measured | idle


async def measure_baseline(
    engines: Engines,
    queue: str,
    done_key: str,
    plan: Plan,
    pids: list[int],
    alive: Callable[[], None],
) -> dict[str, Any]:
    """The same with arq directly: enqueue_job from ``plan.clients`` senders on one pool."""
    pool = await create_pool(RedisSettings.from_dsn(engines.redis_url), default_queue_name=queue)
    senders = [arq_sender(pool)] * plan.clients  # one pool, as an application would share
    try:

        async def batch(
            count: int, poll: float = POLL_S, by: list[Send] = senders
        ) -> tuple[Submission, list[str]]:
            await pool.delete(done_key)
            submission = await submit(count, by, time.monotonic() + plan.timeout)
            submission.check("enqueues")
            deadline = time.monotonic() + plan.timeout
            await list_filled(pool, done_key, count, queue, deadline, alive, poll)
            await drained(pool, queue)
            return submission, [e.decode() for e in await pool.lrange(done_key, 0, -1)]

        async def one() -> tuple[float, float]:
            _, [entry] = await batch(1, IDLE_POLL_S, senders[:1])
            enqueued, completed = entry.split()
            return int(enqueued) / 1000, int(completed) / 1000

        if plan.warmup:
            await batch(plan.warmup)
        workers_cpu = cpu_seconds(pids)
        with CpuMeter() as cpu:
            submission, entries = await batch(plan.tasks)
        measured = {
            "cpu_busy_pct": cpu.busy_pct,
            "workers_cpu_s": round(cpu_seconds(pids) - workers_cpu, 2),
            "api_cpu_s": None,
        }
        idle = await idle_latencies(plan.idle, one)
    finally:
        await pool.aclose()
    if len(entries) != plan.tasks:
        raise BenchError(f"{len(entries)} baseline jobs done, {plan.tasks} enqueued")
    done = [(int(a) / 1000, int(b) / 1000) for a, b in (e.split() for e in entries)]
    return figures(submission, done, plan.tasks) | measured | idle


async def set_up_tenant(base_url: str) -> str:
    """Create the tenant and its owner; the owner's bearer token."""
    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as client:
        created = await client.post("/api/v1/tenants", json=TENANT)
        if created.status_code != 201:
            raise BenchError(
                f"POST /api/v1/tenants: expected 201, got {created.status_code}: {created.text}"
            )
        login = await client.post("/api/v1/auth/login", json=LOGIN)
        if login.status_code != 200 or "access_token" not in login.json():
            raise BenchError(
                f"POST /api/v1/auth/login: expected 200 with access_token, "
                f"got {login.status_code}: {login.text}"
            )
        return str(login.json()["access_token"])


# ---------------------------------------------------------------------------------------------
# Report


def markdown_tables(report: dict[str, Any]) -> str:
    lines = [
        "| Scenario | workers | tasks/s end to end | p50 ms | p95 ms | submit/s | seconds "
        "| CPU busy % | workers CPU s | API CPU s | idle p50 ms | idle p95 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['scenario']} | {r['workers']} | {cell(r['per_second'])} "
            f"| {cell(r['p50_ms'])} | {cell(r['p95_ms'])} | {cell(r['submit_per_second'])} "
            f"| {cell(r['elapsed_s'], 2)} | {cell(r['cpu_busy_pct'], 0)} "
            f"| {cell(r['workers_cpu_s'], 2)} | {cell(r['api_cpu_s'], 2)} "
            f"| {cell(r.get('idle_p50_ms'), 1)} | {cell(r.get('idle_p95_ms'), 1)} |"
        )
    lines += [
        "",
        "| workers | product ÷ baseline, tasks/s | product ÷ baseline, p50 latency "
        "| product ÷ baseline, idle p50 latency |",
        "|---:|---:|---:|---:|",
    ]
    for workers, r in report["ratios"]["product_per_baseline"].items():
        lines.append(
            f"| {workers} | {cell(r['per_second'], 3)} | {cell(r['p50_ms'], 1)} "
            f"| {cell(r['idle_p50_ms'], 2)} |"
        )
    scaling = report["ratios"]["two_workers_per_one"]
    lines += [
        "",
        "| Scenario | 2 workers ÷ 1 worker, tasks/s |",
        "|---|---:|",
        *(f"| {scenario} | {cell(scaling[scenario], 2)} |" for scenario in SCENARIOS),
    ]
    return "\n".join(lines)


def ratios(results: list[dict[str, Any]]) -> dict[str, Any]:
    by = {(r["scenario"], r["workers"]): r for r in results}
    return {
        "product_per_baseline": {
            str(n): {
                key: ratio(by["product", n].get(key), by["baseline", n].get(key))
                for key in ("per_second", "p50_ms", "idle_p50_ms")
            }
            for n in WORKER_COUNTS
        },
        "two_workers_per_one": {
            s: ratio(by[s, 2]["per_second"], by[s, 1]["per_second"]) for s in SCENARIOS
        },
    }


def baseline_worker_command(
    engines: Engines, queue: str, done_key: str, max_jobs: int
) -> list[str]:
    return [
        sys.executable,
        str(BASELINE_WORKER),
        f"--redis-url={engines.redis_url}",
        f"--queue={queue}",
        f"--done-key={done_key}",
        f"--max-jobs={max_jobs}",
    ]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--tasks", type=int, default=500, help="measured tasks per phase (default 500)"
    )
    parser.add_argument(
        "--clients", type=int, default=4, help="concurrent submitting clients (default 4)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=20,
        help="unmeasured tasks run to completion first, per phase (default 20; 0 for none)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds a phase's submissions, or its completions, may take (default 300)",
    )
    parser.add_argument(
        "--idle",
        type=int,
        default=20,
        help="tasks submitted one at a time to idle workers, per phase (default 20; 0 for none)",
    )
    args = parser.parse_args()
    if args.tasks < 1 or args.clients < 1 or min(args.warmup, args.idle) < 0 or args.timeout <= 0:
        parser.error("--tasks and --clients must be at least 1, --warmup and --idle at least 0")
    return args


def run(args: argparse.Namespace, stamp: str) -> dict[str, Any]:
    machine = describe_machine()
    print(
        f"machine: nproc {machine['nproc']}, {machine['cpu_model']}, {machine['python']}, "
        f"{machine['platform']}"
    )
    run_id = secrets.token_hex(4)
    engines = Engines(
        admin_url=f"postgresql://{ADMIN_ROLE}@{HOST}:{POSTGRES_PORT}/postgres",
        redis_url=f"redis://{HOST}:{REDIS_PORT}/{REDIS_DB}",
        database=f"tenantry_bench_{run_id}",
        queue_prefix=f"tenantry-bench:{run_id}",
    )
    versions = asyncio.run(check_engines(engines))
    print(
        f"engines: PostgreSQL {versions['postgresql']} on {HOST}:{POSTGRES_PORT}, "
        f"Redis {versions['redis']} on {HOST}:{REDIS_PORT} database {REDIS_DB}"
    )
    machine["background_cpu_busy_pct"] = background_load()
    plan = Plan(
        tasks=args.tasks,
        warmup=args.warmup,
        clients=args.clients,
        timeout=args.timeout,
        idle=args.idle,
    )

    def log(name: str) -> Path:
        return RESULTS_DIR / f"tasks-{stamp}.{name}.log"

    results: list[dict[str, Any]] = []
    exit_codes: dict[str, int | None] = {}
    with contextlib.ExitStack() as stack:
        tmp = Path(
            stack.enter_context(
                tempfile.TemporaryDirectory(prefix="tenantry-bench-", ignore_cleanup_errors=True)
            )
        )
        # Unwound in reverse: the processes stop, then Redis is flushed, then the database goes.
        asyncio.run(admin_execute(engines, f'create database "{engines.database}"'))
        stack.callback(
            lambda: asyncio.run(
                admin_execute(engines, f'drop database if exists "{engines.database}" with (force)')
            )
        )
        if flushed := asyncio.run(flush_redis(engines)):
            print(f"   flushed {flushed} keys left in Redis database {REDIS_DB}")
        stack.callback(lambda: asyncio.run(flush_redis(engines)))

        port = free_port()
        base_url = f"http://{HOST}:{port}"
        env = product_env(engines, tmp, port)
        concurrency = load_settings(environ=env, env_file=None).worker_concurrency
        print(f"== database {engines.database}: keyring, migrations (log: {log('setup')})")
        run_setup_command(tenantry("keys", "rotate"), env, tmp, log("setup"))
        # Migrations run as the owner; they create the app role the API and workers use.
        owner_env = env | {"TENANTRY_DATABASE_URL": engines.url()}
        run_setup_command(tenantry("db", "upgrade"), owner_env, tmp, log("setup"))

        print(f"== starting tenantry serve on {base_url} (log: {log('api')})")
        api = stack.enter_context(
            running(
                tenantry("serve", f"--port={port}"),
                name="tenantry serve",
                env=env,
                cwd=tmp,
                log_path=log("api"),
            )
        )
        print(f"   ready after {wait_ready(api, base_url, log('api'), 'tenantry serve'):.1f} s")
        token = asyncio.run(set_up_tenant(base_url))
        # Without TENANTRY_* variables, though it reads none.
        baseline_env = {k: v for k, v in env.items() if not k.startswith("TENANTRY_")}

        queue = f"{engines.queue_prefix}:baseline"
        done_key = f"{engines.queue_prefix}:baseline-done"
        for count in WORKER_COUNTS:
            for scenario in SCENARIOS:
                logs = [log(f"{scenario}-{count}w-{i + 1}") for i in range(count)]
                print(
                    f"== {scenario}, {count} worker(s) of {concurrency} jobs: {args.warmup} "
                    f"warm-up + {args.tasks} tasks, {args.clients} clients (logs: {logs[0]} ...)"
                )
                if scenario == "product":
                    command, name = tenantry("worker"), "tenantry worker"
                else:
                    command = baseline_worker_command(engines, queue, done_key, concurrency)
                    name = "baseline worker"
                worker_env = env if scenario == "product" else baseline_env
                with workers(count, command, name, worker_env, tmp, logs) as processes:
                    pids = [p.pid for p in processes]
                    alive = liveness(processes, logs, name)
                    if scenario == "product":
                        measured = measure_product(
                            base_url, token, engines, plan, pids, [api.pid], alive
                        )
                    else:
                        measured = measure_baseline(engines, queue, done_key, plan, pids, alive)
                    result = asyncio.run(measured)
                for i, process in enumerate(processes):
                    exit_codes[f"{scenario}-{count}w-{i + 1}"] = process.returncode
                results.append(
                    {"scenario": scenario, "workers": count}
                    | result
                    | {"worker_exit_codes": [p.returncode for p in processes]}
                    | {"logs": [str(p) for p in logs]}
                )
                print(
                    f"   {cell(result['per_second'])} tasks/s end to end, p50 "
                    f"{cell(result['p50_ms'])} ms; idle p50 {cell(result.get('idle_p50_ms'))} "
                    f"ms; worker exit codes "
                    f"{[p.returncode for p in processes]}"
                )
    exit_codes["api"] = api.returncode
    print(f"== tenantry serve stopped with exit code {api.returncode}")

    return {
        "timestamp": stamp,
        "machine": machine,
        "options": vars(args),
        "engines": versions
        | {
            "database": engines.database,
            "redis_db": REDIS_DB,
            "queue_prefix": engines.queue_prefix,
        },
        "worker_concurrency": concurrency,
        "exit_codes": exit_codes,
        "results": results,
        "ratios": ratios(results),
        "notes": NOTES,
    }


def report_tasks(report: dict[str, Any], stamp: str) -> bool:
    print(
        f"worker concurrency (TENANTRY_WORKER_CONCURRENCY, arq max_jobs): "
        f"{report['worker_concurrency']}"
    )
    print()
    print(markdown_tables(report))
    print()
    print("\n".join(f"- {note}" for note in report["notes"]))
    failed = {name: code for name, code in report["exit_codes"].items() if code != 0}
    for name, code in failed.items():
        print(
            f"\n{name} exited with {code} after SIGINT: see {RESULTS_DIR}/tasks-{stamp}.{name}.log"
        )
    return not failed


def main() -> int:
    args = parse_args()
    return bench_main("tasks", lambda stamp: run(args, stamp), report_tasks)


if __name__ == "__main__":
    sys.exit(main())

"""What the benchmarks share: the product as a subprocess, the engines, the machine's
description and load, wrk, memory sampling, bounded loops and the report's number formatting.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import psutil
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tenantry.config import redact_url

HOST = "127.0.0.1"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Only the brute-force limits move off their defaults: one client logs in far more than a person.
RATE_LIMITS = {
    "TENANTRY_LOGIN_ATTEMPTS_PER_ACCOUNT": "100000000",
    "TENANTRY_LOGIN_ATTEMPTS_PER_ADDRESS": "100000000",
    "TENANTRY_REGISTER_ATTEMPTS_PER_ADDRESS": "100000",
}
READY_TIMEOUT_S = 120.0
READY_POLL_S = 0.2
STOP_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 30.0
# Every measuring loop also stops after this many iterations, whatever the clock says.
MAX_ITERATIONS = 1_000_000
# How long to watch the machine before starting: other load skews every figure.
BACKGROUND_S = 2.0
CONNECT_TIMEOUT_S = 5.0
# wrk is killed this long after its -d has passed; a request slower than WRK_TIMEOUT is an error.
WRK_GRACE_S = 60.0
WRK_TIMEOUT = "10s"
WRK_MARKER = "BENCH_RESULT "
RSS_SAMPLE_S = 0.05
MIB = 1024 * 1024
# The UTC timestamp of a run, in its report's file names.
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


def until(deadline: float, limit: int = MAX_ITERATIONS) -> Iterator[int]:
    """Iteration numbers while the monotonic clock is before ``deadline``, at most ``limit``."""
    for iteration in range(limit):
        if time.monotonic() >= deadline:
            return
        yield iteration


def _cpu_jiffies() -> tuple[int, int, int]:
    """Busy, total and stolen CPU time of the whole machine so far, from the first line of
    /proc/stat. Stolen: what a virtual machine's host gave to others while this one had work."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields), fields[7]


class CpuMeter:
    """How busy all CPUs were during the block: evidence that the load saturated the machine;
    and how much of their time the host took (a shared machine's noise, which no ratio of two
    runs can cancel when it falls on one of them)."""

    start: tuple[int, int, int]
    busy_pct: float | None = None
    steal_pct: float | None = None

    def __enter__(self) -> CpuMeter:
        self.start = _cpu_jiffies()
        return self

    def __exit__(self, *_: object) -> None:
        busy, total, stolen = (
            end - start for end, start in zip(_cpu_jiffies(), self.start, strict=True)
        )
        self.busy_pct = 100 * busy / total if total else None
        self.steal_pct = 100 * stolen / total if total else None


# ---------------------------------------------------------------------------------------------
# Machine


def describe_machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        "unknown",
    )
    return {
        "nproc": len(os.sched_getaffinity(0)),  # what `nproc` prints: the CPUs we may use
        "cpu_model": model,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
    }


def describe_filesystem(path: Path) -> dict[str, Any]:
    """The block device under ``path`` and, for ext4, whether it keeps a journal (Linux's
    /proc/fs/ext4 and /proc/fs/jbd2 list them). Without one, a new file skips every inode
    freed in the last minutes, one by one: file-creating figures then depend on what was
    deleted before them (bench/README.md, "Sixth round")."""
    device = os.stat(path).st_dev
    link = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}")
    name = link.resolve().name if link.exists() else None
    ext4 = name is not None and Path("/proc/fs/ext4", name).exists()
    journal = any(Path("/proc/fs/jbd2").glob(f"{name}-*")) if ext4 else None
    return {"path": str(path), "device": name, "ext4": ext4, "journal": journal}


def background_load() -> float | None:
    """How busy the CPUs are before anything starts, printed: other load skews every figure."""
    with CpuMeter() as background:
        time.sleep(BACKGROUND_S)
    print(
        f"CPU busy before starting (other load): {cell(background.busy_pct, 0)}% "
        f"over {BACKGROUND_S:g} s"
    )
    return background.busy_pct


# ---------------------------------------------------------------------------------------------
# The product under test


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def tenantry(*arguments: str) -> list[str]:
    """The command line of ``tenantry ARGUMENTS`` with this interpreter, the project's own."""
    return [sys.executable, "-m", "tenantry", *arguments]


def product_environment(data_dir: Path, port: int) -> dict[str, str]:
    """The inherited environment without its TENANTRY_* variables, plus exactly ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTRY_")}
    env |= RATE_LIMITS
    return env | {
        "TENANTRY_HOST": HOST,
        "TENANTRY_PORT": str(port),
        "TENANTRY_DATA_DIR": str(data_dir),
    }


def log_tail(log_path: Path, lines: int = 30) -> str:
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def running(
    command: list[str], *, name: str, env: dict[str, str], cwd: Path, log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A server as a subprocess, stopped with SIGINT when the block ends, however it ends.

    It runs in its own session so that a Ctrl-C in the terminal reaches only the benchmark,
    which then stops the server once (`tenantry dev` stops its PostgreSQL and Redis itself).
    Its working directory is a temporary one, so a developer's .env is not read.
    """
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - a command line of our own, no shell
            command,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    print(f"{name} ignored SIGINT for {STOP_TIMEOUT_S:.0f} s: killing it")
                    process.kill()
                    process.wait()


def wait_ready(process: subprocess.Popen[bytes], base_url: str, log_path: Path, name: str) -> float:
    """Seconds until GET /ready answered 200."""
    started = time.monotonic()
    with httpx.Client(base_url=base_url, timeout=2.0) as client:
        for _ in until(started + READY_TIMEOUT_S):
            if process.poll() is not None:
                raise BenchError(
                    f"{name} exited with {process.returncode} before it was ready:\n"
                    + log_tail(log_path)
                )
            with contextlib.suppress(httpx.TransportError):
                if client.get("/ready").status_code == 200:
                    return time.monotonic() - started
            time.sleep(READY_POLL_S)
    raise BenchError(
        f"/ready did not answer 200 within {READY_TIMEOUT_S:.0f} s:\n" + log_tail(log_path)
    )


# ---------------------------------------------------------------------------------------------
# Engines: a PostgreSQL server and a Redis database, with this run's names on them


@dataclass(frozen=True)
class Engines:
    """A PostgreSQL server, reached through a superuser's URL, and a Redis database, with the
    names this run uses on them: a database of its own and a prefix for its queues."""

    admin_url: str
    redis_url: str
    database: str
    queue_prefix: str

    def url(self, role: str | None = None) -> str:
        """Our database, as the admin or as ``role``. Another role connects without a password
        (trust, peer or a .pgpass file), as the app role does on a developer's server."""
        parts = urlsplit(self.admin_url)
        netloc = parts.netloc if role is None else f"{role}@{parts.netloc.rpartition('@')[2]}"
        return urlunsplit(parts._replace(netloc=netloc, path=f"/{self.database}"))

    def redis(self) -> Redis:
        """A client whose every wait is bounded, connecting included."""
        return Redis.from_url(
            self.redis_url,
            socket_timeout=CONNECT_TIMEOUT_S,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
        )


async def check_engines(engines: Engines) -> dict[str, str]:
    """The servers' versions; a clear failure when one does not answer."""
    try:
        connection = await asyncpg.connect(engines.admin_url, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, asyncpg.PostgresError) as error:
        raise BenchError(
            f"PostgreSQL at {redact_url(engines.admin_url)} does not answer: {error!r}"
        ) from None
    try:
        postgres_version = await connection.fetchval("show server_version")
    finally:
        await connection.close()
    redis = engines.redis()
    try:
        info = await redis.info("server")
    except (RedisError, OSError) as error:
        raise BenchError(
            f"Redis at {redact_url(engines.redis_url)} does not answer: {error!r}"
        ) from None
    finally:
        await redis.aclose()
    return {"postgresql": str(postgres_version), "redis": str(info["redis_version"])}


async def admin_execute(engines: Engines, sql: str) -> None:
    """One statement on the admin connection (create or drop our database)."""
    connection = await asyncpg.connect(engines.admin_url, timeout=CONNECT_TIMEOUT_S)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


# ---------------------------------------------------------------------------------------------
# Load: wrk


@dataclass(frozen=True)
class Requests:
    """What wrk sends: its paths in turn, each with the same method, headers and body."""

    paths: list[str]
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


def wrk_script(path: Path, requests: Requests, request_lua: str | None = None) -> Path:
    """A wrk Lua script sending ``requests``, and a result line of counts and latency
    percentiles (microseconds) that is easier to read than wrk's text and has p95.

    A body goes to a file beside the script (the script reads it once); one path is set
    statically, so wrk formats its request once instead of on every request. ``request_lua``,
    when given, replaces the paths: Lua of its own that chooses each request (``request()``,
    ``setup()``, ``response()`` ...); a global function ``extra_report()`` it defines is
    called at the end and its string printed after the result line.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"wrk.method = {json.dumps(requests.method)}"]
    lines += [
        f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in requests.headers.items()
    ]
    if requests.body is not None:
        body_path = path.with_suffix(".body")
        body_path.write_bytes(requests.body)
        lines.append(
            f'local body = assert(io.open({json.dumps(str(body_path))}, "rb"))\n'
            'wrk.body = body:read("*a")\n'
            "body:close()"
        )
    if request_lua is not None:
        lines.append(request_lua)
    elif len(requests.paths) == 1:
        lines.append(f"wrk.path = {json.dumps(requests.paths[0])}")
    else:
        paths = ", ".join(json.dumps(p) for p in requests.paths)
        lines.append(
            f"local paths = {{ {paths} }}\n"
            "local turn = 0\n"
            "function request()\n"
            "  turn = turn % #paths + 1\n"
            "  return wrk.format(nil, paths[turn])\n"
            "end"
        )
    lines.append(
        f"""function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{WRK_MARKER}{{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, '
    .. '"p95_us": %d, "p99_us": %d, "max_us": %d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency.max))
  if extra_report then io.write(extra_report()) end
end"""
    )
    path.write_text("\n".join(lines) + "\n")
    return path


def add_wrk_arguments(parser: argparse.ArgumentParser) -> None:
    """--duration, --warmup, --connections and --threads: the load of every wrk benchmark."""
    # wrk takes whole seconds.
    parser.add_argument(
        "--duration", type=int, default=10, help="seconds of each measured run (default 10)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="seconds of unrecorded load before each measured run (default 2; 0 for none)",
    )
    parser.add_argument(
        "--connections", type=int, default=16, help="wrk's open connections (default 16)"
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk's threads (default 1)")


def bad_wrk_arguments(args: argparse.Namespace) -> bool:
    return args.duration < 1 or args.warmup < 0 or not 1 <= args.threads <= args.connections


def describe_wrk_run(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The machine (with how busy it is before starting) and wrk's version, both printed."""
    machine = describe_machine()
    print(
        f"machine: nproc {machine['nproc']}, {machine['cpu_model']}, {machine['python']}, "
        f"{machine['platform']}"
    )
    version = wrk_version()
    print(f"load: {version}, {args.threads} thread(s), {args.connections} connections")
    machine["background_cpu_busy_pct"] = background_load()
    return machine, version


def load_generator(args: argparse.Namespace, version: str) -> dict[str, Any]:
    """wrk's part of a report."""
    return {
        "tool": version,
        "threads": args.threads,
        "connections": args.connections,
        "timeout": WRK_TIMEOUT,
    }


def wrk_version() -> str:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed: apt-get install wrk (Debian's package)")
    # wrk prints its version with its usage, and exits 1 after -v.
    shown = subprocess.run(
        ["wrk", "-v"],  # noqa: S607 - wrk from PATH, checked above
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return shown.stdout.splitlines()[0] if shown.stdout else "unknown"


def wrk(base_url: str, script: Path, seconds: int, args: argparse.Namespace) -> dict[str, Any]:
    """One wrk run of ``seconds`` with ``args.threads`` and ``args.connections``."""
    command = [
        "wrk",
        f"--threads={args.threads}",
        f"--connections={args.connections}",
        f"--duration={seconds}s",
        f"--timeout={WRK_TIMEOUT}",
        "--latency",
        f"--script={script}",
        f"{base_url}/",
    ]
    try:
        done = subprocess.run(  # noqa: S603 - a command line of our own, no shell
            command, capture_output=True, text=True, timeout=seconds + WRK_GRACE_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk ran {WRK_GRACE_S:.0f} s past its duration") from None
    line = next((x for x in done.stdout.splitlines() if x.startswith(WRK_MARKER)), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    raw = json.loads(line.removeprefix(WRK_MARKER))
    elapsed_s = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "elapsed_s": round(elapsed_s, 3),
        "per_second": raw["requests"] / elapsed_s if elapsed_s else None,
        # wrk counts a status of 400 or more as an error; 3xx would count as success.
        "non_2xx": raw["status"],
        "socket_errors": {k: raw[k] for k in ("connect", "read", "write", "timeout")},
        **{f"{p}_ms": raw[f"{p}_us"] / 1000 for p in ("p50", "p90", "p95", "p99", "max")},
        "wrk_output": done.stdout,
    }


def errors_of(result: dict[str, Any]) -> int:
    """A wrk run's failed requests: error statuses and socket errors."""
    return int(result["non_2xx"] + sum(result["socket_errors"].values()))


# ---------------------------------------------------------------------------------------------
# Memory


class PeakRss:
    """The largest resident set size seen while watched, sampled with psutil every
    RSS_SAMPLE_S: of the processes ``pids``, summed, with their descendants when asked (the
    worker processes of a uvicorn started with --workers). Pages the processes share are
    counted in each, so a tree's sum overstates what it holds alone."""

    def __init__(self, pids: list[int], *, descendants: bool) -> None:
        self.roots = [psutil.Process(pid) for pid in pids]
        self.descendants = descendants
        self.before_load = self.rss(self.processes())
        self.peak = 0

    def processes(self) -> list[psutil.Process]:
        if not self.descendants:
            return self.roots
        return [p for root in self.roots for p in (root, *root.children(recursive=True))]

    @staticmethod
    def rss(processes: list[psutil.Process]) -> int:
        total = 0
        for process in processes:
            # A process that exited mid-run shows up as the load's errors; nothing to add.
            with contextlib.suppress(psutil.NoSuchProcess):
                total += process.memory_info().rss
        return total

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Samples from the start of the block to its end; the tree is read once, at the
        start (walking /proc 20 times a second would take CPU from what is measured)."""
        processes = self.processes()
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(RSS_SAMPLE_S):
                self.peak = max(self.peak, self.rss(processes))

        sampler = threading.Thread(target=sample, name="rss", daemon=True)
        sampler.start()
        try:
            yield
        finally:
            stop.set()
            sampler.join()

    def summary(self) -> dict[str, float]:
        return {
            "rss_before_load_mib": round(self.before_load / MIB, 1),
            "peak_rss_under_load_mib": round(self.peak / MIB, 1),
        }


# ---------------------------------------------------------------------------------------------
# Report


class HealthProbe:
    """GET /health from a thread of this process, one request at a time, ``gap_s`` apart: the
    latency a client sees of a server busy with other work (or idle). The pause between
    requests keeps the probe observing the server's event loop rather than loading it."""

    def __init__(self, base_url: str, *, gap_s: float = 0.01) -> None:
        self.base_url, self.gap_s = base_url, gap_s
        self.latencies_ms: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, name="health-probe", daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _probe(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=REQUEST_TIMEOUT_S) as client:
            client.get("/health")  # opens the connection, which is not what is measured
            for _ in until(math.inf):
                if self._stop.is_set():
                    return
                started = time.perf_counter()
                try:
                    answered = client.get("/health").status_code == 200
                except httpx.HTTPError:
                    answered = False
                if answered:
                    self.latencies_ms.append((time.perf_counter() - started) * 1000)
                else:
                    self.failures += 1
                self._stop.wait(self.gap_s)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)
        return {
            "count": len(ordered),
            "errors": self.failures,
            **{f"p{p}_ms": percentile(ordered, p) for p in (50, 95, 99)},
        }


def probe_health(base_url: str, seconds: float) -> dict[str, Any]:
    """:class:`HealthProbe`'s figures of ``seconds`` with nothing else asked of the server."""
    with HealthProbe(base_url) as probe:
        time.sleep(seconds)
    return probe.summary()


def percentile(ordered: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def exit_on_sigterm(signum: int, _frame: object) -> None:
    """A SIGTERM handler: `kill` then unwinds like Ctrl-C does, through the blocks that stop
    the servers."""
    raise SystemExit(128 + signum)


def bench_main(
    name: str,
    run: Callable[[str], dict[str, Any]],
    report: Callable[[dict[str, Any], str], bool],
    expected: tuple[type[Exception], ...] = (),
) -> int:
    """The frame every bench shares: SIGTERM as a clean stop, a timestamp, failures as exit
    codes, and the JSON report under results/. ``report`` prints and says whether all held."""
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    stamp = datetime.now(UTC).strftime(STAMP_FORMAT)
    RESULTS_DIR.mkdir(exist_ok=True)
    failures: tuple[type[Exception], ...] = (BenchError, *expected)
    try:
        result = run(stamp)
    except failures as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print()
    held = report(result, stamp)
    path = RESULTS_DIR / f"{name}-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults: {path}")
    return 0 if held else 1

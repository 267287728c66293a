"""What the benchmarks share: the product as a subprocess, the machine's description and load,
bounded loops and the report's number formatting. See bench/README.md.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

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


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


def until(deadline: float, limit: int = MAX_ITERATIONS) -> Iterator[int]:
    """Iteration numbers while the monotonic clock is before ``deadline``, at most ``limit``."""
    for iteration in range(limit):
        if time.monotonic() >= deadline:
            return
        yield iteration


def _cpu_jiffies() -> tuple[int, int]:
    """Busy and total CPU time of the whole machine so far, from the first line of /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


class CpuMeter:
    """How busy all CPUs were during the block: evidence that the load saturated the machine."""

    start: tuple[int, int]
    busy_pct: float | None = None

    def __enter__(self) -> CpuMeter:
        self.start = _cpu_jiffies()
        return self

    def __exit__(self, *_: object) -> None:
        busy, total = (end - start for end, start in zip(_cpu_jiffies(), self.start, strict=True))
        self.busy_pct = 100 * busy / total if total else None


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
# Report


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
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
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

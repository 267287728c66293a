"""Where a server's CPU goes during a measured run: its CPU time per request (psutil), and with
``--profile`` py-spy's samples summarised by package and by function.

CPU per request is the least noisy figure on a shared machine: load from elsewhere slows both
servers' throughput unevenly, but barely changes how much CPU one request costs.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

PY_SPY = Path(sys.executable).with_name("py-spy")
SAMPLES_PER_S = 250
TOP = 25
STOP_TIMEOUT_S = 30.0
# A frame of py-spy's raw (collapsed) output: "function (path/to/file.py:123)".
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]+)(?::\d+)?\)$")
_SITE_PACKAGES = re.compile(r"(?:site|dist)-packages/(?P<package>[A-Za-z0-9_]+)")
_STANDARD_LIBRARY = re.compile(r"/lib/python3\.\d+/(?P<module>[A-Za-z0-9_]+)")


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """User and system CPU the processes and their descendants have used so far."""
    user = system = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(pid)
            for process in (root, *root.children(recursive=True)):
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = process.cpu_times()
                    user += times.user
                    system += times.system
    return user, system


@dataclass
class CpuPerRequest:
    """The server's CPU over a block, for ``per_request`` once the block's requests are known;
    ``system_s`` is the kernel's part of it (an upload's write into the page cache is most of
    it, and its cost depends on the machine's memory: bench/README.md, "Eighteenth round")."""

    pid: int
    used_s: float = 0.0
    system_s: float = 0.0

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        user, system = cpu_seconds([self.pid])
        try:
            yield
        finally:
            user_after, system_after = cpu_seconds([self.pid])
            self.system_s = system_after - system
            self.used_s = user_after - user + self.system_s

    def figures(self, requests: int) -> dict[str, float | None]:
        return {
            "server_cpu_s": round(self.used_s, 3),
            "cpu_us_per_request": per_request(self.used_s, requests),
            "system_cpu_us_per_request": per_request(self.system_s, requests),
        }


def per_request(seconds: float, requests: int) -> float | None:
    return round(seconds / requests * 1e6, 1) if requests else None


def owner(file: str) -> str:
    """The package a frame's file belongs to: a site-packages distribution, tenantry, or the
    standard library's module (asyncio, logging, ...)."""
    if match := _SITE_PACKAGES.search(file):
        return match["package"]
    if "tenantry/" in file or file.startswith("bench/"):
        return "tenantry"
    if match := _STANDARD_LIBRARY.search(file):
        return match["module"]
    return file.rsplit("/", 1)[-1] or "?"


def frame_key(frame: str) -> tuple[str, str]:
    """(function with its file, owning package) of one collapsed frame."""
    match = _FRAME.match(frame)
    if match is None:
        return frame, "?"
    file = match["file"]
    return f"{match['function']} ({file.rsplit('/', 2)[-1] if '/' in file else file})", owner(file)


@dataclass
class Summary:
    samples: int = 0
    by_package: Counter[str] = field(default_factory=Counter)
    self_time: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)

    def add(self, stack: list[str], count: int) -> None:
        # The first frames are py-spy's process and thread labels.
        frames = [frame_key(frame) for frame in stack if "(" in frame]
        if not frames:
            return
        self.samples += count
        function, package = frames[-1]
        self.self_time[function] += count
        self.by_package[package] += count
        for seen in {name for name, _ in frames}:
            self.inclusive[seen] += count

    def as_text(self) -> str:
        def share(counter: Counter[str]) -> list[str]:
            return [
                f"  {count / self.samples * 100:5.1f} %  {name}"
                for name, count in counter.most_common(TOP)
            ]

        if not self.samples:
            return "no samples\n"
        return "\n".join(
            [
                f"{self.samples} samples at {SAMPLES_PER_S}/s",
                "self time by package:",
                *share(self.by_package),
                "self time by function:",
                *share(self.self_time),
                "inclusive time by function:",
                *share(self.inclusive),
                "",
            ]
        )

    def as_dict(self) -> dict[str, Any]:
        def share(counter: Counter[str]) -> dict[str, float]:
            return {
                name: round(count / self.samples * 100, 1)
                for name, count in counter.most_common(TOP)
            }

        return {
            "samples": self.samples,
            "self_pct_by_package": share(self.by_package) if self.samples else {},
            "self_pct_by_function": share(self.self_time) if self.samples else {},
            "inclusive_pct_by_function": share(self.inclusive) if self.samples else {},
        }


def summarise(collapsed: Path) -> Summary:
    summary = Summary()
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            summary.add(stack.split(";"), int(count))
    return summary


@contextlib.contextmanager
def sampled(pid: int, output: Path) -> Iterator[None]:
    """py-spy sampling the server and its workers for the length of the block; it writes its
    collapsed stacks to ``output`` when interrupted. Non-blocking: the server is never paused,
    so the run it samples is barely slowed."""
    command = [
        str(PY_SPY),
        "record",
        f"--pid={pid}",
        "--subprocesses",
        "--nonblocking",
        "--full-filenames",
        f"--rate={SAMPLES_PER_S}",
        "--format=raw",
        f"--output={output}",
    ]
    with (output.with_suffix(".py-spy.log")).open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - a command line of our own, no shell
            command, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

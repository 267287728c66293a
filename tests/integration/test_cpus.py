"""TENANTRY_CPU_PINNING: API processes claim one CPU each, in turn, and give it back when they
die; the password hash threads keep every CPU. Each process here is a real one: pinning
applies to the process that asks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tenantry.infrastructure import cpus

pytestmark = pytest.mark.skipif(not cpus.supported(), reason="no sched_setaffinity here")

PINNED = """
import os, pathlib, sys
from tenantry.infrastructure import cpus
cpu = cpus.pin_process(pathlib.Path(sys.argv[1]))
if "again" in sys.argv:
    assert cpus.pin_process(pathlib.Path(sys.argv[1])) == cpu
print(cpu, *sorted(os.sched_getaffinity(0)), flush=True)
sys.stdin.read()
"""

HASHING = """
import json, os, pathlib, sys, threading
from tenantry.infrastructure import cpus
from tenantry.infrastructure.security.passwords import Argon2PasswordHasher
cpus.pin_process(pathlib.Path(sys.argv[1]))
hasher = Argon2PasswordHasher(
    time_cost=1, memory_cost_kib=1024, parallelism=1, max_concurrency=1
)
def placement():
    thread = threading.get_native_id()
    return sorted(os.sched_getaffinity(0)), os.getpriority(os.PRIO_PROCESS, thread)
cpus_of_hash, niceness = hasher.pool.submit(placement).result()
print(json.dumps({"loop": sorted(os.sched_getaffinity(0)), "hash": cpus_of_hash, "nice": niceness}))
hasher.close()
"""

ALLOWED = sorted(os.sched_getaffinity(0)) if cpus.supported() else []


class Pinned:
    """A process that pinned itself under ``claims`` and waits for its stdin to close."""

    def __init__(self, claims: Path, *flags: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", PINNED, str(claims), *flags],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        cpu, *affinity = map(int, self.process.stdout.readline().split())
        self.cpu, self.affinity = cpu, affinity

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[Pinned]]:
    started: list[Pinned] = []
    yield started
    for process in started:
        process.stop()


def test_processes_claim_the_cpus_in_turn(tmp_path: Path, processes: list[Pinned]) -> None:
    claims = tmp_path / "cpus"
    for _ in range(len(ALLOWED) + 1):
        processes.append(Pinned(claims))
    # One CPU each, the allowed ones in order, then around again.
    assert [p.cpu for p in processes] == [*ALLOWED, ALLOWED[0]]
    assert [p.affinity for p in processes] == [[p.cpu] for p in processes]


def test_a_dead_process_leaves_its_cpu_to_the_next(tmp_path: Path, processes: list[Pinned]) -> None:
    claims = tmp_path / "cpus"
    for _ in ALLOWED:
        processes.append(Pinned(claims))
    gone = processes.pop()
    gone.stop()
    processes.append(Pinned(claims))
    assert processes[-1].cpu == gone.cpu
    # Not a second turn's CPU: the claim died with its process.
    assert sorted(p.cpu for p in processes) == ALLOWED


def test_a_second_pin_keeps_the_first_claim(tmp_path: Path, processes: list[Pinned]) -> None:
    claims = tmp_path / "cpus"
    processes.append(Pinned(claims, "again"))
    processes.append(Pinned(claims))
    # The first process holds one claim: the next CPU is still free for the second.
    assert [p.cpu for p in processes] == [ALLOWED[0], ALLOWED[1 % len(ALLOWED)]]


def test_an_unusable_directory_stops_start_up(tmp_path: Path) -> None:
    blocked = tmp_path / "a file"
    blocked.write_text("")
    result = subprocess.run(
        [sys.executable, "-c", PINNED, str(blocked / "cpus")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "TENANTRY_CPU_PINNING: cannot claim a CPU under" in result.stderr


def test_password_hashes_keep_every_cpu(tmp_path: Path) -> None:
    output = subprocess.run(
        [sys.executable, "-c", HASHING, str(tmp_path / "cpus")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(output) == {"loop": ALLOWED[:1], "hash": ALLOWED, "nice": 19}

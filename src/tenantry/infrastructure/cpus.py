"""One CPU per API process (TENANTRY_CPU_PINNING): its event loop and the threads it hands
file I/O to share that CPU, while the password hashes keep every CPU the process was given.

An upload's bytes go to a storage thread; with the loop on one CPU and the thread on another,
each hand-over of the GIL between them waits for the other CPU (bench/README.md, "Twenty-second
round"). API processes sharing a data directory claim their CPUs through lock files in it: the
first CPU no live process holds, so N processes on N CPUs get one each, and one that restarts
takes back the CPU its predecessor left. The kernel drops a claim with its process."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from tenantry.config import SettingsError

# The claim this process holds (kept open: closing the file would let it go) and the CPUs it
# could run on before it was pinned, which the hash threads take back.
_pinned: list[tuple[IO[bytes], frozenset[int]]] = []


def supported() -> bool:
    return hasattr(os, "sched_setaffinity")


def pin_process(claims: Path) -> int:
    """Pin the calling thread, and so every thread it starts from now on, to the first CPU of
    its allowed set that no other process holds a claim on under ``claims``; with more
    processes than CPUs, the CPUs are shared out in turn. Call it before other threads start:
    those already running keep every CPU. Returns the CPU."""
    if _pinned:
        return next(iter(os.sched_getaffinity(0)))
    allowed = sorted(os.sched_getaffinity(0))
    try:
        claims.mkdir(parents=True, exist_ok=True)
        turn = 0
        while True:
            for cpu in allowed:
                claim = (claims / f"cpu-{cpu}.{turn}").open("ab")
                try:
                    fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    claim.close()
                    continue
                _pinned.append((claim, frozenset(allowed)))
                os.sched_setaffinity(0, {cpu})
                return cpu
            turn += 1
    except OSError as error:
        # A setting that cannot be honoured: start-up ends with this one line.
        raise SettingsError(
            f"TENANTRY_CPU_PINNING: cannot claim a CPU under {claims}: {error}"
        ) from error


def unpin_thread() -> None:
    """Give the calling thread back every CPU the process had before it was pinned: for
    threads that do CPU-bound work outside the GIL (password hashes)."""
    if _pinned:
        os.sched_setaffinity(0, _pinned[0][1])

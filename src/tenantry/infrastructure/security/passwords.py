"""argon2id password hashing, off the event loop and bounded in memory."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import cache

from argon2 import PasswordHasher as Argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from tenantry.infrastructure import cpus

# The niceness of the hash threads (0 is the process's default, 19 the lowest priority). A
# hash is tens of milliseconds of CPU and a pool as large as the CPU count keeps every core
# busy under a burst of logins; at equal priority the event loop then waits its turn behind
# them, and every request, /health included, with it. At 19 the scheduler runs the loop (and
# PostgreSQL, Redis) first the moment they have work, and the hashes get every cycle left over:
# logins/s stay as they were on an otherwise idle machine, they slow down, not the API, when
# the CPUs are busy with other work.
HASH_NICENESS = 19


def start_hash_thread(niceness: int) -> None:
    """A hash thread runs on every CPU the process was given, even when the process is pinned
    to one (TENANTRY_CPU_PINNING), at the lowest priority."""
    cpus.unpin_thread()
    lower_priority(niceness)


def lower_priority(niceness: int = HASH_NICENESS) -> None:
    """Lower the calling thread's scheduling priority to ``niceness``, never raise it.

    Linux schedules threads, and its setpriority() on a thread id applies to that thread alone;
    elsewhere the call would reach the whole process, so nothing is done there."""
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    current = os.getpriority(os.PRIO_PROCESS, thread)
    if niceness > current:
        os.setpriority(os.PRIO_PROCESS, thread, niceness)


@cache
def decoy_hash(time_cost: int, memory_cost_kib: int, parallelism: int) -> str:
    """Checked when the user does not exist, so an unknown login costs the same time. Made
    once per process and parameters: a hash is tens of milliseconds, and every app (each
    test's) makes a hasher."""
    decoy = Argon2(time_cost=time_cost, memory_cost=memory_cost_kib, parallelism=parallelism)
    return decoy.hash("not a real password, only a timing decoy")


class Argon2PasswordHasher:
    """argon2-cffi releases the GIL while hashing; a small pool caps memory at
    ``max_concurrency * memory_cost`` and keeps a burst of logins from stalling the loop."""

    def __init__(
        self,
        *,
        time_cost: int,
        memory_cost_kib: int,
        parallelism: int,
        max_concurrency: int,
        niceness: int = HASH_NICENESS,
    ) -> None:
        self.hasher = Argon2(
            time_cost=time_cost, memory_cost=memory_cost_kib, parallelism=parallelism
        )
        self.pool = ThreadPoolExecutor(
            max_workers=max_concurrency,
            thread_name_prefix="argon2",
            initializer=start_hash_thread,
            initargs=(niceness,),
        )
        self.dummy_hash = decoy_hash(time_cost, memory_cost_kib, parallelism)

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(
            self.pool, self.hasher.hash, password
        )

    async def verify(self, password_hash: str | None, password: str) -> bool:
        return await asyncio.get_running_loop().run_in_executor(
            self.pool, self._verify, password_hash, password
        )

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            return self.hasher.verify(password_hash or self.dummy_hash, password) and bool(
                password_hash
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self.hasher.check_needs_rehash(password_hash)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

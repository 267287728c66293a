"""Usage metering's shared buffer in Redis: each process adds its tally there every few
seconds; the worker claims what gathered and folds it into PostgreSQL.

Keys, under the prefix:
- ``live:<tenant>:<day>``: a hash of the day's counts not yet claimed (HINCRBY from every
  process); ``dirty``: the set of the ``<tenant>:<day>`` whose live hash exists.
- ``users:<tenant>:<day>``: the day's distinct user ids (a set; kept three days).
- ``flush:<id>``: a claimed live hash, renamed, with its ``<tenant>:<day>`` and the day's user
  count; ``flushing``: the ids of the flushes claimed and not yet folded.

A claim renames a live hash in one script: counts added after it start a new live hash, so
nothing is counted twice or lost between the processes and the worker. A flush stays until
the worker has folded it and says so: a worker killed in between leaves it for the next claim.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from datetime import date, timedelta
from typing import cast
from uuid import UUID

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tenantry.application.usage import TASK_MS, TASK_RUNS, UsageTally
from tenantry.domain.ids import new_id
from tenantry.domain.ports import Clock
from tenantry.domain.usage import Counter, Tally

log = structlog.stdlib.get_logger("tenantry.usage")
USERS_KEPT = timedelta(days=3)
# KEYS: dirty, flushing. ARGV: prefix, "<tenant>:<day>", the flush's id.
CLAIM = """
redis.call('SREM', KEYS[1], ARGV[2])
local live = ARGV[1] .. 'live:' .. ARGV[2]
if redis.call('EXISTS', live) == 0 then return 0 end
local flush = ARGV[1] .. 'flush:' .. ARGV[3]
redis.call('RENAME', live, flush)
redis.call('HSET', flush, '_day', ARGV[2], '_users', redis.call('SCARD', ARGV[1] .. 'users:' .. ARGV[2]))
redis.call('SADD', KEYS[2], ARGV[3])
return 1
"""


class RedisUsageMeter(UsageTally):
    """The hot path's meter (a :class:`UsageTally`), which every ``interval`` adds what it
    counted to the buffer, and once more when stopped. While Redis is unreachable the counts
    stay in memory and go with the next flush that succeeds."""

    def __init__(
        self, redis: Redis, clock: Clock, *, interval: timedelta, prefix: str = "tenantry:usage:"
    ) -> None:
        super().__init__(clock)
        self.redis = redis
        self.interval = interval
        self.prefix = prefix
        self.running: asyncio.Task[None] | None = None
        self.unreachable = False

    async def start(self) -> None:
        self.running = asyncio.create_task(self._every_interval())

    async def stop(self) -> None:
        if self.running is not None:
            self.running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.running
            self.running = None
        await self.flush()

    async def _every_interval(self) -> None:
        while True:
            await asyncio.sleep(self.interval.total_seconds())
            await self.flush()

    async def flush(self) -> None:
        taken = self.take()
        if not taken:
            return
        pipe = self.redis.pipeline(transaction=True)
        for (tenant, day), counts in taken.items():
            member = f"{tenant}:{day.isoformat()}"
            live = f"{self.prefix}live:{member}"
            for name, amount in counts.fields.items():
                pipe.hincrby(live, name, amount)
            if counts.users:
                users = f"{self.prefix}users:{member}"
                pipe.sadd(users, *(str(user) for user in counts.users))
                pipe.expire(users, USERS_KEPT)
            pipe.sadd(f"{self.prefix}dirty", member)
        try:
            await pipe.execute()
        except (RedisError, OSError) as error:
            self.give_back(taken)
            if not self.unreachable:
                log.warning("usage counts kept in memory: Redis unreachable", error=str(error))
            self.unreachable = True
            return
        if self.unreachable:
            log.info("usage counts reach Redis again")
            self.unreachable = False


class RedisUsageBuffer:
    """The worker's side of the buffer (the UsageBuffer port)."""

    def __init__(self, redis: Redis, *, prefix: str = "tenantry:usage:") -> None:
        self.redis = redis
        self.prefix = prefix
        self.claim_script = redis.register_script(CLAIM)

    async def claim(self) -> list[Tally]:
        dirty, flushing = f"{self.prefix}dirty", f"{self.prefix}flushing"
        members = await cast("Awaitable[set[bytes]]", self.redis.smembers(dirty))
        for member in members:
            await self.claim_script(
                keys=[dirty, flushing], args=[self.prefix, member, str(new_id())]
            )
        flush_ids = sorted(await cast("Awaitable[set[bytes]]", self.redis.smembers(flushing)))
        pipe = self.redis.pipeline(transaction=False)
        for flush_id in flush_ids:
            pipe.hgetall(f"{self.prefix}flush:{flush_id.decode()}")
        tallies = []
        for flush_id, fields in zip(flush_ids, await pipe.execute(), strict=True):
            if fields:
                tallies.append(tally(UUID(flush_id.decode()), fields))
            else:  # folded and forgotten but for its id: a worker killed in between
                await cast("Awaitable[int]", self.redis.srem(flushing, flush_id))
        return tallies

    async def folded(self, tally: Tally) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(f"{self.prefix}flush:{tally.flush_id}")
        pipe.srem(f"{self.prefix}flushing", str(tally.flush_id))
        await pipe.execute()


def tally(flush_id: UUID, fields: dict[bytes, bytes]) -> Tally:
    values = {name.decode(): value.decode() for name, value in fields.items()}
    tenant, day = values.pop("_day").split(":")
    found = Tally(
        flush_id=flush_id,
        tenant_id=UUID(tenant),
        day=date.fromisoformat(day),
        active_users=int(values.pop("_users", 0)),
    )
    counters = {counter.value for counter in Counter}
    for name, value in values.items():
        if name in counters:
            found.counters[Counter(name)] = int(value)
        elif name.startswith(TASK_RUNS):
            found.task_runs[name.removeprefix(TASK_RUNS)] = int(value)
        elif name.startswith(TASK_MS):
            found.task_ms[name.removeprefix(TASK_MS)] = int(value)
    return found

"""Usage metering's shared buffer in Redis: each process adds its tally there every few
seconds; the worker claims what gathered and folds it into PostgreSQL.

Keys, under the prefix:
- ``live:<tenant>:<day>``: a hash of the day's counts not yet claimed (HINCRBY from every
  process); ``dirty``: the set of the ``<tenant>:<day>`` whose live hash exists.
- ``users:<tenant>:<day>``: the day's distinct user ids (a set; kept three days).
- ``today:<day>``: each tenant's requests and task milliseconds of the day, added with the
  live hash and never claimed: what the daily limits are checked against.
- ``limits``: the tenants' limits (JSON by tenant id), published by the worker.
- ``flush:<id>``: a claimed live hash, renamed, with its ``<tenant>:<day>`` and the day's user
  count; ``flushing``: the ids of the flushes claimed and not yet folded.

A claim renames a live hash in one script: counts added after it start a new live hash, so
nothing is counted twice or lost between the processes and the worker. A flush stays until
the worker has folded it and says so: a worker killed in between leaves it for the next claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import Awaitable
from datetime import date, timedelta
from typing import cast
from uuid import UUID

import msgspec
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tenantry.application.usage import TASK_MS, TASK_RUNS, Counts, Key, Shared, UsageTally
from tenantry.domain.ids import new_id
from tenantry.domain.ports import Clock
from tenantry.domain.usage import Counter, Tally, UsageLimits

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
        """Add what was counted to the buffer, then read the tenants' limits and the limited
        tenants' totals of the day, which :meth:`check` weighs requests against."""
        taken = self.take()
        try:
            if taken:
                await self._gather(taken)
            await self._read_limits()
        except (RedisError, OSError) as error:
            self.give_back(taken)
            if not self.unreachable:
                log.warning("usage counts kept in memory: Redis unreachable", error=str(error))
            self.unreachable = True
            return
        if self.unreachable:
            log.info("usage counts reach Redis again")
            self.unreachable = False

    async def _gather(self, taken: dict[Key, Counts]) -> None:
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
            # The day's totals the limits are checked against, kept apart from what the worker
            # claims and folds.
            totals = f"{self.prefix}today:{day.isoformat()}"
            if requests := counts.requests:
                pipe.hincrby(totals, f"{tenant}:requests", requests)
            if task_ms := counts.task_ms:
                pipe.hincrby(totals, f"{tenant}:task_ms", task_ms)
            pipe.expire(totals, USERS_KEPT)
        await pipe.execute()

    async def _read_limits(self) -> None:
        stored = await cast(
            "Awaitable[dict[bytes, bytes]]", self.redis.hgetall(f"{self.prefix}limits")
        )
        limits = {
            UUID(tenant.decode()): msgspec.json.decode(value, type=UsageLimits)
            for tenant, value in stored.items()
        }
        shared: dict[UUID, Shared] = {}
        if limits:
            day = self.clock.now().date()
            fields = [f"{tenant}:{name}" for tenant in limits for name in ("requests", "task_ms")]
            values = await cast(
                "Awaitable[list[bytes | None]]",
                self.redis.hmget(f"{self.prefix}today:{day.isoformat()}", fields),
            )
            for index, tenant in enumerate(limits):
                requests, task_ms = values[2 * index : 2 * index + 2]
                shared[tenant] = Shared(
                    day=day, requests=int(requests or 0), task_ms=int(task_ms or 0)
                )
        self.limits, self.shared = limits, shared


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

    async def busiest(self, day: date, count: int) -> list[tuple[UUID, int]]:
        totals = await cast(
            "Awaitable[dict[bytes, bytes]]",
            self.redis.hgetall(f"{self.prefix}today:{day.isoformat()}"),
        )
        requests = [
            (UUID(field.decode().removesuffix(":requests")), int(value))
            for field, value in totals.items()
            if field.endswith(b":requests")
        ]
        return heapq.nlargest(count, requests, key=lambda pair: pair[1])

    async def publish_limits(self, limits: dict[UUID, UsageLimits]) -> None:
        # Replaced whole, in one transaction: a limit removed from a tenant's settings goes too.
        key = f"{self.prefix}limits"
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(key)
        if limits:
            pipe.hset(
                key, mapping={str(t): msgspec.json.encode(value) for t, value in limits.items()}
            )
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

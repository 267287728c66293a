"""Fixed-window rate limits in Redis, shared by every API process."""

from __future__ import annotations

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

log = structlog.stdlib.get_logger("tenantry.rate_limit")


class RedisRateLimiter:
    """Counts attempts per key and window.

    When Redis is unreachable the limiter lets the attempt through and logs an error: sign-in
    stays available and brute force is still slowed by argon2 (fails open, by design).
    """

    def __init__(self, redis: Redis, *, prefix: str = "tenantry:rl:") -> None:
        self.redis = redis
        self.prefix = prefix

    async def hit(self, key: str, *, limit: int, window_seconds: int) -> int | None:
        """Count one attempt; the seconds to wait when over the limit, else None."""
        async with self.redis.pipeline(transaction=True) as pipe:
            # SET NX EX starts the window once; EXPIRE NX would need Redis 7.
            pipe.set(self.prefix + key, 0, ex=window_seconds, nx=True)
            pipe.incr(self.prefix + key)
            pipe.ttl(self.prefix + key)
            return await self._over(pipe, limit, skip=1)

    async def retry_after(self, key: str, *, limit: int) -> int | None:
        """The seconds to wait when ``key`` is already over the limit, counting nothing."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self.prefix + key)
            pipe.ttl(self.prefix + key)
            return await self._over(pipe, limit, skip=0)

    async def _over(self, pipe: Pipeline, limit: int, *, skip: int) -> int | None:
        """Run ``pipe`` (ending with the count and its ttl) and judge the count."""
        try:
            count, ttl = (await pipe.execute())[skip:]
        except RedisError as error:
            log.error("rate limiter unavailable; allowing the attempt", error=type(error).__name__)
            return None
        if count is not None and int(count) > limit:
            return max(int(ttl), 1)
        return None

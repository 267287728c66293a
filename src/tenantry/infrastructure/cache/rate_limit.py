"""Fixed-window rate limits in Redis, shared by every API process."""

from __future__ import annotations

import structlog
from redis.asyncio import Redis
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
        name = self.prefix + key
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                # SET NX EX starts the window once; EXPIRE NX would need Redis 7.
                pipe.set(name, 0, ex=window_seconds, nx=True)
                pipe.incr(name)
                pipe.ttl(name)
                _, count, ttl = await pipe.execute()
        except RedisError as error:
            log.error("rate limiter unavailable; allowing the attempt", error=type(error).__name__)
            return None
        if count > limit:
            return max(int(ttl), 1)
        return None

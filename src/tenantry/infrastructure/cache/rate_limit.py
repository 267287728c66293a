"""Fixed-window rate limits in Redis, shared by every API process."""

from __future__ import annotations

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from tenantry.domain.auth import Attempt

log = structlog.stdlib.get_logger("tenantry.rate_limit")

# Every limit of one attempt in one round trip, atomically: SET NX EX starts a key's window
# once (EXPIRE NX would need Redis 7), INCR counts. ARGV holds each key's window and limit.
# Returns the longest wait among the limits exceeded, 0 when none is.
HIT = """
local wait = 0
for i, key in ipairs(KEYS) do
    redis.call('SET', key, 0, 'EX', ARGV[2 * i - 1], 'NX')
    if redis.call('INCR', key) > tonumber(ARGV[2 * i]) then
        wait = math.max(wait, redis.call('TTL', key), 1)
    end
end
return wait
"""


class RedisRateLimiter:
    """Counts attempts per key and window.

    When Redis is unreachable the limiter lets the attempt through and logs an error: sign-in
    stays available and brute force is still slowed by argon2 (fails open, by design).
    """

    def __init__(self, redis: Redis, *, prefix: str = "tenantry:rl:") -> None:
        self.redis = redis
        self.prefix = prefix
        # EVALSHA, loading the script again if the server lost it (a restart, SCRIPT FLUSH).
        self._hit = redis.register_script(HIT)

    async def hit(self, *attempts: Attempt) -> int | None:
        """Count one attempt against each limit; the seconds to wait when over any, else None."""
        keys = [self.prefix + attempt.key for attempt in attempts]
        windows_and_limits = [
            value for attempt in attempts for value in (attempt.window_seconds, attempt.limit)
        ]
        try:
            wait = await self._hit(keys=keys, args=windows_and_limits)
        except RedisError as error:
            self._unavailable(error)
            return None
        return int(wait) or None

    async def retry_after(self, key: str, *, limit: int) -> int | None:
        """The seconds to wait when ``key`` is already over the limit, counting nothing."""
        pipe: Pipeline
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self.prefix + key)
            pipe.ttl(self.prefix + key)
            try:
                count, ttl = await pipe.execute()
            except RedisError as error:
                self._unavailable(error)
                return None
        if count is not None and int(count) > limit:
            return max(int(ttl), 1)
        return None

    def _unavailable(self, error: RedisError) -> None:
        log.error("rate limiter unavailable; allowing the attempt", error=type(error).__name__)

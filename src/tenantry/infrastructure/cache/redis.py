"""The Redis client shared by rate limits, caches and the job queue."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from tenantry.config import Settings


def create_redis(settings: Settings) -> Redis:
    client: Redis = Redis.from_url(
        settings.required("redis_url"),
        socket_connect_timeout=settings.db_connect_timeout,
        socket_timeout=settings.db_connect_timeout,
        health_check_interval=30,
    )
    return client


async def ping(client: Redis) -> float:
    """Run one round trip; return its latency in milliseconds."""
    started = time.perf_counter()
    await client.ping()
    return (time.perf_counter() - started) * 1000

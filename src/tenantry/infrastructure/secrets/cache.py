"""A time-to-live cache in front of any secret store.

Reads are served from memory; once a value is older than ``ttl`` it is still served at once
while one background read refreshes it, so a request never waits on Vault after start-up. When
the store cannot be reached, the last value read keeps serving (with a warning) instead of
taking the API down; ``/ready`` reports the outage through ``ping``, which is never cached.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from tenantry.domain.secrets import Secret, SecretNotFound, SecretStore, SecretsUnavailable

log = structlog.stdlib.get_logger("tenantry.secrets")


class CachedSecrets:
    def __init__(
        self,
        inner: SecretStore,
        *,
        ttl: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.ttl = ttl
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, Secret]] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    def __repr__(self) -> str:
        return f"CachedSecrets({self.inner!r}, ttl={self.ttl})"

    async def read(self, name: str, *, fresh: bool = False) -> Secret:
        cached = self._cache.get(name)
        if cached is not None and not fresh:
            if self._monotonic() - cached[0] >= self.ttl and name not in self._refreshing:
                task = asyncio.create_task(self._refresh(name))
                self._refreshing[name] = task
                task.add_done_callback(lambda _: self._refreshing.pop(name, None))
            return cached[1]
        try:
            return await self._load(name)
        except SecretsUnavailable as error:
            if cached is None:
                raise
            self._keep_stale(name, error)
            return cached[1]

    async def _load(self, name: str) -> Secret:
        secret = await self.inner.read(name, fresh=True)
        self._cache[name] = (self._monotonic(), secret)
        return secret

    async def _refresh(self, name: str) -> None:
        try:
            await self._load(name)
        except SecretsUnavailable as error:
            self._keep_stale(name, error)
        except SecretNotFound:
            self._cache[name] = (self._monotonic(), self._cache[name][1])
            log.error("secret deleted from the store; serving the cached value", secret=name)

    def _keep_stale(self, name: str, error: SecretsUnavailable) -> None:
        # The next attempt waits another ttl: an outage costs one warning per ttl, not a storm.
        self._cache[name] = (self._monotonic(), self._cache[name][1])
        log.warning(
            "secret store unavailable; serving the cached secret", secret=name, error=error.detail
        )

    async def write(self, name: str, data: Mapping[str, Any], *, cas: int) -> int:
        version = await self.inner.write(name, data, cas=cas)
        self._cache[name] = (self._monotonic(), Secret(data=dict(data), version=version))
        return version

    async def ping(self) -> None:
        await self.inner.ping()

    def describe(self, name: str) -> str:
        return self.inner.describe(name)

    async def close(self) -> None:
        for task in list(self._refreshing.values()):
            task.cancel()
        await asyncio.gather(*self._refreshing.values(), return_exceptions=True)

"""The secret cache, the keyring reader's refresh rules and the Vault bootstrap, all in memory."""

from __future__ import annotations

import asyncio

import pytest

from tenantry.application.keys import RotateSigningKey, read_keyring
from tenantry.application.secrets import BootstrapSecrets
from tenantry.domain.secrets import DATABASE, KEYRING, S3, Secret, SecretsUnavailable
from tenantry.infrastructure.secrets.cache import CachedSecrets
from tenantry.infrastructure.security.tokens import SigningKeys

from .fakes import FakeClock, FakeSecretStore


class CountingStore(FakeSecretStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.down = False

    async def read(self, name: str, *, fresh: bool = False) -> Secret:
        self.reads += 1
        if self.down:
            raise SecretsUnavailable("the store is down")
        return await super().read(name, fresh=fresh)


class Ticker:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_cache_serves_from_memory_then_refreshes_in_the_background() -> None:
    inner, ticker = CountingStore(), Ticker()
    await inner.write(DATABASE, {"password": "one"}, cas=0)
    cache = CachedSecrets(inner, ttl=60, monotonic=ticker)
    assert (await cache.read(DATABASE)).data["password"] == "one"
    await inner.write(DATABASE, {"password": "two"}, cas=1)
    ticker.now = 59
    assert (await cache.read(DATABASE)).data["password"] == "one"
    assert inner.reads == 1
    ticker.now = 61
    # Stale: served at once, refreshed behind the request.
    assert (await cache.read(DATABASE)).data["password"] == "one"
    await asyncio.sleep(0)
    assert (await cache.read(DATABASE)).data["password"] == "two"
    assert (await cache.read(DATABASE, fresh=True)).version == 2
    await cache.close()


async def test_cache_keeps_serving_through_an_outage_and_fails_without_a_value() -> None:
    inner, ticker = CountingStore(), Ticker()
    await inner.write(DATABASE, {"password": "one"}, cas=0)
    cache = CachedSecrets(inner, ttl=1, monotonic=ticker)
    await cache.read(DATABASE)
    inner.down = True
    ticker.now = 5
    assert (await cache.read(DATABASE, fresh=True)).data["password"] == "one"
    reads = inner.reads
    # One failed attempt per ttl, not one per request.
    for _ in range(10):
        assert (await cache.read(DATABASE)).data["password"] == "one"
        await asyncio.sleep(0)
    assert inner.reads == reads
    with pytest.raises(SecretsUnavailable):
        await cache.read(S3)
    await cache.close()


async def test_an_unknown_kid_rereads_the_keyring_at_most_once_per_interval() -> None:
    inner, ticker, clock = CountingStore(), Ticker(), FakeClock()
    await RotateSigningKey(inner, clock)()
    keys = SigningKeys(
        CachedSecrets(inner, ttl=3600, monotonic=ticker), refresh_interval=1.0, monotonic=ticker
    )
    await keys.load()
    before = inner.reads
    assert await asyncio.gather(*(keys.get("0" * 16) for _ in range(50))) == [None] * 50
    assert inner.reads == before + 1

    # Another process rotates; the first token with the new kid is accepted at once.
    described = await RotateSigningKey(inner, clock)()
    ticker.now = 1.0
    key = await keys.get(described[0].kid)
    assert key is not None
    assert key.kid == (await read_keyring(inner)).current.kid
    assert (await keys.signing_key()).kid == described[0].kid


async def test_bootstrap_copies_what_differs_and_keeps_an_existing_keyring() -> None:
    source, target, clock = FakeSecretStore(), FakeSecretStore(), FakeClock()
    await source.write(DATABASE, {"password": "pw"}, cas=0)
    report = await BootstrapSecrets(source, target, clock)()
    assert (report.written, report.unchanged, report.keyring_created) == (
        [DATABASE],
        [],
        True,
    )
    keyring = (await target.read(KEYRING)).version
    again = await BootstrapSecrets(source, target, clock)()
    assert (again.written, again.unchanged, again.keyring_created) == ([], [DATABASE], False)
    assert (await target.read(KEYRING)).version == keyring

    await source.write(DATABASE, {"password": "rotated"}, cas=1)
    assert (await BootstrapSecrets(source, target, clock)()).written == [DATABASE]
    assert (await target.read(DATABASE)).data == {"password": "rotated"}

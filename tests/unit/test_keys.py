"""The keyring's rules and the rotation use cases, against an in-memory secret store."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from itertools import pairwise
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenantry.application.keys import (
    EnsureKeyring,
    ListSigningKeys,
    PruneSigningKeys,
    RotateSigningKey,
    read_keyring,
)
from tenantry.domain.auth import Actor
from tenantry.domain.errors import Conflict, Forbidden, Invalid
from tenantry.domain.keys import Keyring, new_signing_key
from tenantry.domain.secrets import KEYRING
from tenantry.domain.users import Role

from .fakes import FakeClock, FakeSecretStore

TTL = timedelta(minutes=15)
member = Actor(user_id=uuid4(), tenant_id=uuid4(), roles=(Role.OWNER,))
root = Actor(user_id=uuid4(), tenant_id=uuid4(), roles=(Role.SUPERUSER,))


async def test_the_first_rotation_creates_the_keyring_and_later_ones_add_a_current_key() -> None:
    store, clock = FakeSecretStore(), FakeClock()
    first = await RotateSigningKey(store, clock)()
    clock.advance(minutes=1)
    second = await RotateSigningKey(store, clock)(root)
    assert [k.current for k in second] == [True, False]
    assert second[1].kid == first[0].kid
    assert (await read_keyring(store)).current.kid == second[0].kid


async def test_rotation_is_for_superusers_only() -> None:
    with pytest.raises(Forbidden):
        await RotateSigningKey(FakeSecretStore(), FakeClock())(member)
    with pytest.raises(Forbidden):
        await ListSigningKeys(FakeSecretStore())(member)


class RacingStore(FakeSecretStore):
    """Another process rotates between our read and our write, ``races`` times."""

    def __init__(self, races: int, clock: FakeClock) -> None:
        super().__init__()
        self.races = races
        self.clock = clock

    async def write(self, name: str, data: Mapping[str, Any], *, cas: int) -> int:
        if self.races and name in self.secrets:
            self.races -= 1
            current = self.secrets[name]
            other = Keyring.from_secret(current.data, current.version).rotated(
                new_signing_key(self.clock.now())
            )
            await super().write(name, other.as_secret(), cas=current.version)
        return await super().write(name, data, cas=cas)


async def test_a_concurrent_rotation_is_kept_not_overwritten() -> None:
    clock = FakeClock()
    store = RacingStore(races=2, clock=clock)
    await RotateSigningKey(store, clock)()
    described = await RotateSigningKey(store, clock)()
    # Ours plus the first key plus two keys from the racing writer: nothing lost.
    assert len(described) == 4
    assert len({key.kid for key in described}) == 4


async def test_a_rotation_that_never_wins_the_race_is_a_conflict() -> None:
    clock = FakeClock()
    store = RacingStore(races=0, clock=clock)
    await RotateSigningKey(store, clock)()
    store.races = 100
    with pytest.raises(Conflict):
        await RotateSigningKey(store, clock)()


async def test_ensure_keyring_creates_once() -> None:
    store, clock = FakeSecretStore(), FakeClock()
    assert await EnsureKeyring(store, clock)() is True
    assert await EnsureKeyring(store, clock)() is False
    assert store.writes == 1


async def test_prune_keeps_keys_that_signed_tokens_still_alive() -> None:
    store, clock = FakeSecretStore(), FakeClock()
    prune = PruneSigningKeys(store, clock, token_lifetime=TTL)
    await RotateSigningKey(store, clock)()
    clock.advance(days=30)
    # The month-old key was current until this moment: its tokens live another 15 minutes.
    await RotateSigningKey(store, clock)()
    assert await prune() == []
    clock.advance(minutes=16)
    old = (await read_keyring(store)).describe()[1].kid
    assert await prune() == [old]
    assert len((await read_keyring(store)).describe()) == 1


@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=8))
def test_pruning_never_drops_the_current_key_nor_a_key_retired_within_the_cutoff(
    gaps: list[int],
) -> None:
    clock = FakeClock()
    keyring = Keyring.first(new_signing_key(clock.now()))
    for gap in gaps:
        clock.advance(minutes=gap)
        keyring = keyring.rotated(new_signing_key(clock.now()))
    cutoff = clock.now() - TTL
    kept, dropped = keyring.pruned(cutoff)
    assert kept.current is keyring.current
    ordered = sorted(keyring.keys.values(), key=lambda k: k.created_at)
    for key, successor in pairwise(ordered):
        assert (key.kid in dropped) == (successor.created_at < cutoff)


def test_keys_never_show_their_secret() -> None:
    key = new_signing_key(FakeClock().now())
    assert key.secret not in repr(key)
    assert key.secret not in repr(Keyring.first(key))


@pytest.mark.parametrize(
    "data",
    [{}, {"current": "a", "keys": []}, {"current": "a", "keys": [{"kid": "a"}]}, {"keys": 3}],
)
def test_a_malformed_stored_keyring_is_invalid(data: dict[str, Any]) -> None:
    with pytest.raises(Invalid):
        Keyring.from_secret(data, 1)


async def test_stored_form_round_trips() -> None:
    store, clock = FakeSecretStore(), FakeClock()
    await RotateSigningKey(store, clock)()
    await RotateSigningKey(store, clock)()
    secret = await store.read(KEYRING)
    keyring = Keyring.from_secret(secret.data, secret.version)
    assert keyring.as_secret() == secret.data

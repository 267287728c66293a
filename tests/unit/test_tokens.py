"""The memory of verified access tokens: expiry and key are checked on every use."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from uuid import uuid4

import pytest

from tenantry.application.keys import PruneSigningKeys, RotateSigningKey
from tenantry.domain.errors import Unauthenticated
from tenantry.domain.users import Role
from tenantry.infrastructure.security.tokens import JwtAccessTokens, SigningKeys

from .fakes import FakeClock, FakeSecretStore


async def tokens_with(store: FakeSecretStore, ttl: timedelta) -> JwtAccessTokens:
    await RotateSigningKey(store, FakeClock())()
    return JwtAccessTokens(SigningKeys(store, refresh_interval=1.0), ttl=ttl)


async def issue(tokens: JwtAccessTokens) -> str:
    return await tokens.issue(user_id=uuid4(), tenant_id=uuid4(), roles=(Role.MEMBER,))


async def test_a_token_seen_before_is_refused_once_it_expires() -> None:
    # exp is a whole second: now + 1 s rounded down, so valid for up to a second from now.
    tokens = await tokens_with(FakeSecretStore(), timedelta(seconds=1))
    token = await issue(tokens)
    claims = await tokens.verify(token)
    assert await tokens.verify(token) == claims
    await asyncio.sleep(max(0.0, claims.expires_at.timestamp() - time.time()) + 0.05)
    with pytest.raises(Unauthenticated):
        await tokens.verify(token)


async def test_a_token_seen_before_is_refused_once_its_key_is_pruned() -> None:
    store, clock = FakeSecretStore(), FakeClock()
    tokens = await tokens_with(store, timedelta(minutes=15))
    token = await issue(tokens)
    await tokens.verify(token)
    clock.advance(minutes=1)
    await RotateSigningKey(store, clock)()
    assert (await tokens.verify(token)).tenant_id  # an earlier key still verifies
    clock.advance(minutes=1)
    assert await PruneSigningKeys(store, clock, token_lifetime=timedelta(0))()
    with pytest.raises(Unauthenticated):
        await tokens.verify(token)

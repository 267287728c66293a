"""The memory of verified access tokens: expiry and key are checked on every use."""

from __future__ import annotations

import time
from datetime import timedelta
from uuid import uuid4

import jwt
import pytest

from tenantry.application.keys import PruneSigningKeys, RotateSigningKey
from tenantry.domain.errors import Unauthenticated
from tenantry.domain.users import Role
from tenantry.infrastructure.security.tokens import JwtAccessTokens, SigningKeys

from .fakes import FakeClock, FakeSecretStore


async def tokens_with(
    store: FakeSecretStore, ttl: timedelta, clock: FakeClock | None = None
) -> JwtAccessTokens:
    await RotateSigningKey(store, FakeClock())()
    keys = SigningKeys(store, refresh_interval=1.0)
    if clock is None:
        return JwtAccessTokens(keys, ttl=ttl)
    return JwtAccessTokens(keys, ttl=ttl, now=lambda: clock.now().timestamp())


async def issue(tokens: JwtAccessTokens) -> str:
    return await tokens.issue(
        user_id=uuid4(), tenant_id=uuid4(), roles=(Role.MEMBER,), session_id=uuid4()
    )


async def test_a_token_seen_before_is_refused_once_it_expires() -> None:
    clock = FakeClock()
    tokens = await tokens_with(FakeSecretStore(), timedelta(minutes=15), clock)
    token = await issue(tokens)
    claims = await tokens.verify(token)
    assert claims.expires_at == clock.now() + timedelta(minutes=15)
    clock.advance(minutes=15, microseconds=-1)
    assert await tokens.verify(token) == claims  # remembered, and valid to its last instant
    clock.advance(microseconds=1)
    with pytest.raises(Unauthenticated):
        await tokens.verify(token)
    with pytest.raises(Unauthenticated):  # forgotten, then checked afresh: still expired
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


async def test_a_token_names_its_session_and_older_tokens_without_one_still_verify() -> None:
    tokens = await tokens_with(FakeSecretStore(), timedelta(minutes=15))
    session = uuid4()
    token = await tokens.issue(
        user_id=uuid4(), tenant_id=uuid4(), roles=(Role.MEMBER,), session_id=session
    )
    assert (await tokens.verify(token)).session_id == session
    key = await tokens.keys.signing_key()
    now = int(time.time())
    before_sessions = {
        "iss": "tenantry",
        "sub": str(uuid4()),
        "tid": str(uuid4()),
        "roles": ["member"],
        "jti": uuid4().hex,
        "iat": now,
        "exp": now + 900,
    }

    def signed(payload: dict[str, object]) -> str:
        return jwt.encode(payload, key.material, algorithm="HS256", headers={"kid": key.kid})

    assert (await tokens.verify(signed(before_sessions))).session_id is None
    with pytest.raises(Unauthenticated):
        await tokens.verify(signed({**before_sessions, "sid": "not a session"}))

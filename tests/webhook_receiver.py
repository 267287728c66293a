"""A webhook receiver for the tests: a real HTTP server (uvicorn) on 127.0.0.1 that checks each
delivery's signature with the Standard Webhooks library, answers with the statuses it is told
to (failing on purpose), and can hold requests unanswered until released."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tenantry.infrastructure.embedded import free_port

from .conftest import uvicorn_serving


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool

    @property
    def payload(self) -> dict[str, Any]:
        decoded: dict[str, Any] = msgspec.json.decode(self.body)
        return decoded

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    # The signing secret of each path's endpoint.
    secrets: dict[str, str] = field(default_factory=dict)
    # Statuses to answer, in turn, per path; then 200.
    answers: dict[str, list[int]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    # Cleared: requests wait for it, unanswered.
    open: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.open.set()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {name.decode(): value.decode() for name, value in scope["headers"]}
        path = scope["path"]
        verified = False
        if path in self.secrets:
            with contextlib.suppress(WebhookVerificationError):
                Webhook(self.secrets[path]).verify(body, headers)
                verified = True
        self.received.append(Received(path, headers, body, verified))
        await self.open.wait()
        waiting = self.answers.get(path) or []
        status = waiting.pop(0) if waiting else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok" if status < 300 else b"nope"})

    async def wait_for(self, count: int, *, path: str | None = None, seconds: float = 30) -> None:
        """Until ``count`` requests (to ``path``) arrived."""
        deadline = time.monotonic() + seconds
        while len(self.of(path)) < count:
            assert time.monotonic() < deadline, f"{len(self.of(path))} of {count} arrived"
            await asyncio.sleep(0.05)

    def of(self, path: str | None) -> list[Received]:
        return [r for r in self.received if path is None or r.path == path]

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Receiver]:
        config = uvicorn.Config(
            self, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        async with uvicorn_serving(config):
            try:
                yield self
            finally:
                # Held requests answered: the server can stop.
                self.open.set()

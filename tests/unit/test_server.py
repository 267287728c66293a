"""The API server's connection: a response's writes leave together, nothing is lost or
reordered, and a large write is neither held nor copied."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from tenantry.infrastructure.http.server import (
    HELD_WRITE_LIMIT,
    CoalescingHttpToolsProtocol,
    CoalescingTransport,
)


class RecordingTransport(asyncio.Transport):
    """What reached the socket, write by write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closing = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closing, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def next_step() -> None:
    await asyncio.sleep(0)


async def test_the_writes_of_one_step_leave_as_one_at_its_end() -> None:
    socket = RecordingTransport()
    transport = CoalescingTransport(socket, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"{}")
    assert socket.writes == []
    await next_step()
    assert socket.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
    transport.write(b"next")
    await next_step()
    assert socket.writes[1:] == [b"next"]


async def test_a_large_write_goes_at_once_after_what_was_held() -> None:
    socket = RecordingTransport()
    transport = CoalescingTransport(socket, asyncio.get_running_loop())
    chunk = b"x" * HELD_WRITE_LIMIT
    transport.write(b"head")
    transport.write(chunk)
    assert socket.writes == [b"head", chunk]
    await next_step()
    assert socket.writes == [b"head", chunk]


async def test_close_sends_what_was_held_first_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    socket = RecordingTransport()
    transport = CoalescingTransport(socket, loop)
    transport.write(b"last words")
    transport.close()
    assert socket.writes == [b"last words"]
    assert transport.is_closing()
    await next_step()
    assert socket.writes == [b"last words"]

    aborted = RecordingTransport()
    transport = CoalescingTransport(aborted, loop)
    transport.write(b"never")
    transport.abort()
    await next_step()
    assert aborted.writes == []
    assert aborted.aborted


async def test_a_connection_closed_meanwhile_gets_nothing_more() -> None:
    socket = RecordingTransport()
    transport = CoalescingTransport(socket, asyncio.get_running_loop())
    transport.write(b"late")
    socket.close()  # the peer went away before the step ended
    await next_step()
    assert socket.writes == []


async def test_uvicorn_sends_a_response_head_and_body_in_one_write() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        await receive()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"15")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"status":"ok"}'})

    config = Config(app=app, http=CoalescingHttpToolsProtocol, lifespan="off", log_config=None)
    protocol = CoalescingHttpToolsProtocol(
        config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop()
    )
    socket = RecordingTransport()
    protocol.connection_made(socket)
    for _ in range(2):  # two requests on one connection, kept alive
        protocol.data_received(b"GET /health HTTP/1.1\r\nHost: api\r\n\r\n")
        for _ in range(5):
            await next_step()
    assert len(socket.writes) == 2
    for response in socket.writes:
        assert response.startswith(b"HTTP/1.1 200 OK\r\n")
        assert response.endswith(b'\r\n\r\n{"status":"ok"}')
    protocol.connection_lost(None)

"""The API's HTTP server connection: uvicorn's httptools protocol, a response sent in one write.

uvicorn writes a response's head as soon as the app starts it and its body when it comes, two
writes and, on a connection with TCP_NODELAY, two segments for the client to read: on loopback
each costs the server as much as a short request's own Python. The writes a connection makes
in one step of the event loop are held and sent together at the end of it instead, so a head
and the body that follows it leave as one. Large writes (a download's chunks) are not held.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# A write at least this large goes out at once, after whatever was held: copying it to join it
# would cost more than the segment it saves.
HELD_WRITE_LIMIT = 16 * 1024


class CoalescingTransport:
    """A connection's transport whose small writes wait for the end of the loop's step."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if len(data) >= HELD_WRITE_LIMIT:
            self._send_held()
            self._transport.write(data)
        elif self._held is not None:
            self._held.append(data)
        else:
            self._held = [data]
            self._loop.call_soon(self._send_held)

    def _send_held(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self._send_held()
        self._transport.close()

    def write_eof(self) -> None:
        self._send_held()
        self._transport.write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        # The rest of the transport's interface (reading paused and resumed, the protocol
        # switched on an upgrade) is the connection's own.
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a :class:`CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

"""Webhook deliveries over HTTP (httpx), guarded against SSRF at connect time.

The address check runs where the socket is opened, on the addresses the host resolves to
right then: checking the URL's host beforehand would let DNS answer differently to the
connection (rebinding). TLS still verifies, and sends SNI for, the URL's host name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar
from urllib.parse import urlsplit

import httpcore
import httpx

from tenantry.domain.webhooks import SendOutcome, address_allowed

USER_AGENT = "Tenantry-Webhooks/1"

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_E = TypeVar("_E", bound=BaseException)


class AddressNotAllowed(httpcore.ConnectError):
    """The host resolved to an address outside what may be called; nothing was connected."""

    def __init__(self, address: _Address) -> None:
        super().__init__(f"address {address} is not allowed")
        self.address = address


class HostNotResolved(httpcore.ConnectError):
    """The host name has no address."""


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves each host itself, refuses it if any of its addresses is not allowed, and
    connects to the vetted IP literal (asyncio only: it resolves with the running loop)."""

    def __init__(self, allowed: Sequence[_Network]) -> None:
        self._allowed = allowed
        self._backend = httpcore.AnyIOBackend()

    # httpcore's signatures, called with keywords: ``timeout`` keeps its name (ASYNC109).
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolve(host, port, timeout)
        # Refuse on any bad address rather than skip it: a host that names an internal
        # address is up to no good, whatever else it names.
        for address in addresses:
            if not address_allowed(address, self._allowed):
                raise AddressNotAllowed(address)
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                return await self._backend.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # _resolve never returns no address
        raise failure

    async def _resolve(self, host: str, port: int, within: float | None) -> list[_Address]:
        try:
            async with asyncio.timeout(within):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except OSError as exc:
            raise HostNotResolved(f"{host} did not resolve") from exc
        addresses: list[_Address] = []
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise HostNotResolved(f"{host} did not resolve")
        return addresses

    async def connect_unix_socket(
        self,
        path: str,  # noqa: ARG002
        timeout: float | None = None,  # noqa: ARG002, ASYNC109
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,  # noqa: ARG002
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport (its exception mapping and streams) over a pool on the guarded
    backend: httpx has no parameter for the backend, so the pool it built is replaced by an
    equal one (no proxy, HTTP/1.1) that has it."""

    def __init__(self, ssl_context: ssl.SSLContext, backend: httpcore.AsyncNetworkBackend) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        limits = httpx.Limits()
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


class HttpWebhookSender:
    """The outbound HTTP port: POSTs a signed body, reports what came back, never raises for
    what the network or the receiver does."""

    def __init__(
        self,
        *,
        allowed_networks: Sequence[str],
        allow_http: bool,
        timeout: float = 5.0,
        max_response_bytes: int = 1024,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        networks = [ipaddress.ip_network(network, strict=False) for network in allowed_networks]
        self._allow_http = allow_http
        self._timeout = timeout
        self._max_response_bytes = max_response_bytes
        ssl_context = (
            verify
            if isinstance(verify, ssl.SSLContext)
            else httpx.create_ssl_context(verify=verify, trust_env=False)
        )
        self._client = httpx.AsyncClient(
            transport=_GuardedTransport(ssl_context, _GuardedBackend(networks)),
            follow_redirects=False,
            timeout=httpx.Timeout(timeout),
            trust_env=False,
            # identity: a compressed body could inflate far past the bytes read off the wire.
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def send(self, url: str, headers: Mapping[str, str], body: bytes) -> SendOutcome:
        started = time.perf_counter()
        status: int | None = None
        received: bytes | None = None
        error: str | None = None
        try:
            scheme = urlsplit(url).scheme.lower()
        except ValueError:
            scheme = ""
        schemes = ("https", "http") if self._allow_http else ("https",)
        if scheme not in schemes:
            error = "http(s) is required" if self._allow_http else "https is required"
        else:
            try:
                # httpx's timeouts are per phase: a receiver trickling bytes would never
                # trip them, and a worker's lease is finite, so the exchange is bounded too.
                async with asyncio.timeout(self._timeout):
                    status, received = await self._post(url, headers, body)
            except (TimeoutError, httpx.TimeoutException):
                error = f"timed out after {self._timeout:g} s"
            except httpx.InvalidURL:
                error = "invalid URL"
            except httpx.HTTPError as exc:
                error = _describe(exc)
        if error is None and status is not None and 300 <= status < 400:
            error = "redirect not followed"
        return SendOutcome(
            duration_ms=round((time.perf_counter() - started) * 1000),
            status=status,
            body=None if received is None else received.decode("utf-8", errors="replace"),
            error=error,
        )

    async def _post(self, url: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        received = bytearray()
        async with self._client.stream("POST", url, headers=headers, content=body) as response:
            # Raw bytes: what the receiver wrote, and no more of it than we keep.
            async for chunk in response.aiter_raw():
                received += chunk[: self._max_response_bytes - len(received)]
                if len(received) >= self._max_response_bytes:
                    break
        # Leaving the block closes the response: a body not read to its end closes the
        # connection rather than returning it to the pool.
        return response.status_code, bytes(received)


def _describe(exc: httpx.HTTPError) -> str:
    """A short sentence on what went wrong, with nothing of the request in it (the headers
    carry the signature)."""
    refused = _cause(exc, AddressNotAllowed)
    if refused is not None:
        return f"address {refused.address} is not allowed"
    if _cause(exc, HostNotResolved) is not None:
        return "host name did not resolve"
    certificate = _cause(exc, ssl.SSLCertVerificationError)
    if certificate is not None:
        return f"TLS handshake failed: {certificate.verify_message or 'certificate not valid'}"
    if _cause(exc, ssl.SSLError) is not None:
        return "TLS handshake failed"
    if _cause(exc, ConnectionRefusedError) is not None:
        return "connection refused"
    for kind, sentence in _SENTENCES:
        if isinstance(exc, kind):
            return sentence
    return f"request failed ({type(exc).__name__})"


_SENTENCES: tuple[tuple[type[httpx.HTTPError], str], ...] = (
    (httpx.ConnectError, "connection failed"),
    (httpx.RemoteProtocolError, "the response was not valid HTTP"),
    (httpx.ReadError, "connection lost while reading the response"),
    (httpx.WriteError, "connection lost while sending the request"),
    (httpx.UnsupportedProtocol, "unsupported URL"),
    (httpx.LocalProtocolError, "the request could not be sent"),
    (httpx.NetworkError, "network error"),
)


def _cause(exc: BaseException, kind: type[_E]) -> _E | None:
    """``exc`` or what caused it, at any depth (exception groups included), if of ``kind``."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)
    return None

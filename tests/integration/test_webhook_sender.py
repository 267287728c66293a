"""The webhook sender against real HTTP(S) servers on loopback: delivery, the SSRF guard on
the address connected to, redirects, the response cap, timeouts and TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tenantry.domain.webhooks import address_allowed, new_secret, signed_headers
from tenantry.infrastructure.embedded import free_port
from tenantry.infrastructure.http.webhooks import USER_AGENT, HttpWebhookSender

LOOPBACK = ["127.0.0.0/8", "::1/128"]
BODY = b'{"type":"task.completed","data":{"id":"42"}}'


@dataclass
class Received:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


def reply(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    head = [f"HTTP/1.1 {status} Whatever", f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass
class Receiver:
    """A tiny HTTP/1.1 server: records each connection and request, answers with ``answer``
    (raw bytes), or never answers when it is None."""

    answer: bytes | None
    tls: ssl.SSLContext | None = None
    connections: int = 0
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._stop.set()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def url(self, host: str = "127.0.0.1", path: str = "/hook") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *lines = head.rstrip("\r\n").split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Received(method, target, headers, body))
            if self.answer is None:
                await self._stop.wait()
            else:
                writer.write(self.answer)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass  # the sender hung up: what it saw is what the test checks
        finally:
            writer.close()

    async def saw_nothing(self) -> bool:
        # A connection's handler runs a loop turn or so after the accept: give it time.
        await asyncio.sleep(0.1)
        return self.connections == 0


Serve = Callable[..., Awaitable[Receiver]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    started: list[Receiver] = []

    async def start(answer: bytes | None, tls: ssl.SSLContext | None = None) -> Receiver:
        receiver = Receiver(answer, tls)
        await receiver.start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        await receiver.stop()


@pytest.fixture
async def sender() -> AsyncIterator[HttpWebhookSender]:
    sender = HttpWebhookSender(allowed_networks=LOOPBACK, allow_http=True, timeout=2.0)
    yield sender
    await sender.close()


def signed() -> dict[str, str]:
    return signed_headers(new_secret(), uuid.uuid4(), dt.datetime.now(dt.UTC), BODY)


async def test_delivers_headers_and_body_unchanged(serve: Serve, sender: HttpWebhookSender) -> None:
    receiver = await serve(reply(200, b"thanks"))
    headers = signed()
    outcome = await sender.send(receiver.url(path="/hook?x=1"), headers, BODY)
    assert outcome.succeeded
    assert (outcome.status, outcome.body, outcome.error) == (200, "thanks", None)
    assert outcome.duration_ms >= 0
    [request] = receiver.requests
    assert (request.method, request.target, request.body) == ("POST", "/hook?x=1", BODY)
    assert request.headers.items() >= headers.items()
    assert request.headers["user-agent"] == USER_AGENT
    assert request.headers["content-length"] == str(len(BODY))


async def test_non_2xx_is_a_failure_with_its_body(serve: Serve, sender: HttpWebhookSender) -> None:
    receiver = await serve(reply(500, b"\xffbroken"))
    outcome = await sender.send(receiver.url(), signed(), BODY)
    assert not outcome.succeeded
    assert (outcome.status, outcome.body, outcome.error) == (500, "\ufffdbroken", None)


async def test_loopback_is_refused_unless_allowed(serve: Serve) -> None:
    receiver = await serve(reply(200))
    sender = HttpWebhookSender(allowed_networks=["10.0.0.0/8"], allow_http=True)
    try:
        outcome = await sender.send(receiver.url(), signed(), BODY)
        ipv6 = await sender.send(f"http://[::1]:{receiver.port}/", signed(), BODY)
    finally:
        await sender.close()
    assert (outcome.status, outcome.error) == (None, "address 127.0.0.1 is not allowed")
    assert not outcome.succeeded
    assert ipv6.error == "address ::1 is not allowed"
    assert await receiver.saw_nothing()


async def test_a_host_name_is_checked_by_what_it_resolves_to(serve: Serve) -> None:
    receiver = await serve(reply(204))
    refusing = HttpWebhookSender(allowed_networks=[], allow_http=True)
    allowing = HttpWebhookSender(allowed_networks=LOOPBACK, allow_http=True)
    try:
        refused = await refusing.send(receiver.url("localhost"), signed(), BODY)
        assert refused.error is not None
        assert refused.error.startswith("address ")
        assert refused.error.endswith(" is not allowed")
        assert await receiver.saw_nothing()
        allowed = await allowing.send(receiver.url("localhost"), signed(), BODY)
    finally:
        await refusing.close()
        await allowing.close()
    assert (allowed.status, allowed.error) == (204, None)
    assert receiver.requests[0].headers["host"] == f"localhost:{receiver.port}"


async def test_https_is_required_unless_http_is_allowed(serve: Serve) -> None:
    receiver = await serve(reply(200))
    sender = HttpWebhookSender(allowed_networks=LOOPBACK, allow_http=False)
    try:
        outcome = await sender.send(receiver.url(), signed(), BODY)
        other = await sender.send(f"ftp://127.0.0.1:{receiver.port}/", signed(), BODY)
    finally:
        await sender.close()
    assert (outcome.status, outcome.error) == (None, "https is required")
    assert other.error == "https is required"
    assert await receiver.saw_nothing()


async def test_a_redirect_is_a_failure_and_not_followed(
    serve: Serve, sender: HttpWebhookSender
) -> None:
    target = await serve(reply(200))
    redirecting = await serve(reply(302, headers={"Location": target.url()}))
    outcome = await sender.send(redirecting.url(), signed(), BODY)
    assert not outcome.succeeded
    assert (outcome.status, outcome.error) == (302, "redirect not followed")
    assert len(redirecting.requests) == 1
    assert await target.saw_nothing()


async def test_the_response_body_is_capped(serve: Serve) -> None:
    receiver = await serve(reply(200, b"x" * 200_000))
    sender = HttpWebhookSender(allowed_networks=LOOPBACK, allow_http=True, max_response_bytes=100)
    try:
        outcome = await sender.send(receiver.url(), signed(), BODY)
    finally:
        await sender.close()
    assert (outcome.status, outcome.body) == (200, "x" * 100)


async def test_a_receiver_that_never_answers_times_out(serve: Serve) -> None:
    receiver = await serve(None)
    sender = HttpWebhookSender(allowed_networks=LOOPBACK, allow_http=True, timeout=0.3)
    headers = signed()
    try:
        outcome = await sender.send(receiver.url(), headers, BODY)
    finally:
        await sender.close()
    assert (outcome.status, outcome.error) == (None, "timed out after 0.3 s")
    # The attempt's duration is reported, whatever it was (speed is measured in bench/).
    assert isinstance(outcome.duration_ms, int)
    assert len(receiver.requests) == 1


async def test_a_closed_port_is_connection_refused(sender: HttpWebhookSender) -> None:
    outcome = await sender.send(f"http://127.0.0.1:{free_port()}/", signed(), BODY)
    assert (outcome.status, outcome.error) == (None, "connection refused")


def self_signed(directory: Path) -> Path:
    """A certificate (and its key) for "localhost", signed by itself, as one PEM file."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / "localhost.pem"
    path.write_bytes(
        certificate.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


async def test_tls_verifies_the_host_name_while_connecting_to_the_vetted_address(
    serve: Serve, tmp_path: Path
) -> None:
    pem = self_signed(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(pem)
    receiver = await serve(reply(200, b"secure"), server_tls)
    trusting = HttpWebhookSender(
        allowed_networks=LOOPBACK,
        allow_http=False,
        verify=ssl.create_default_context(cafile=str(pem)),
    )
    default = HttpWebhookSender(allowed_networks=LOOPBACK, allow_http=False)
    try:
        outcome = await trusting.send(receiver.url("localhost"), signed(), BODY)
        # The certificate names localhost, not the address connected to.
        by_address = await trusting.send(receiver.url("127.0.0.1"), signed(), BODY)
        untrusted = await default.send(receiver.url("localhost"), signed(), BODY)
    finally:
        await trusting.close()
        await default.close()
    assert (outcome.status, outcome.body, outcome.error) == (200, "secure", None)
    assert by_address.error is not None
    assert by_address.error.startswith("TLS handshake failed")
    assert untrusted.status is None
    assert untrusted.error is not None
    assert untrusted.error.startswith("TLS handshake failed")
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.0.0.1", False),
        ("169.254.169.254", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),
        ("fd00::1", False),
        ("8.8.8.8", True),
        ("100.64.0.1", False),
        ("224.0.0.1", False),
        ("2001:4860:4860::8888", True),
    ],
)
def test_address_allowed(address: str, allowed: bool) -> None:
    assert address_allowed(ipaddress.ip_address(address), []) is allowed


def test_allowed_networks_let_their_addresses_in() -> None:
    networks = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.1.0.0/16")]
    assert address_allowed(ipaddress.ip_address("::ffff:127.0.0.1"), networks)
    assert address_allowed(ipaddress.ip_address("10.1.2.3"), networks)
    assert not address_allowed(ipaddress.ip_address("10.2.0.1"), networks)
    assert not address_allowed(ipaddress.ip_address("::1"), networks)

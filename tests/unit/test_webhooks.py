"""Webhooks' rules and use cases against in-memory ports: signing (checked by the Standard
Webhooks library), which changes are events, the outbox written with the change, and the
delivery's retries, giving up and switching off."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from tenantry.application.projects import CreateProject, UpdateProject
from tenantry.application.webhooks import (
    CreateWebhook,
    DeleteWebhook,
    Delivered,
    DeliverWebhooks,
    ListWebhookDeliveries,
    PingWebhook,
    RedeliverWebhook,
    UpdateWebhook,
)
from tenantry.config import load_settings
from tenantry.domain.auth import Actor
from tenantry.domain.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    StaleVersion,
    Unavailable,
)
from tenantry.domain.users import Role
from tenantry.domain.webhooks import (
    ENDPOINTS_MAX,
    DeliveryStatus,
    SendOutcome,
    WebhookDelivery,
    WebhookDispatch,
    WebhookEndpoint,
    WebhookPolicy,
    event_of,
    new_secret,
    signed_headers,
)
from tenantry.infrastructure.jobs.webhooks import WebhookLoop
from tenantry.infrastructure.observability.logging import configure_logging

from .fakes import World

TENANT = uuid4()
OWNER = Actor(user_id=uuid4(), tenant_id=TENANT, roles=(Role.OWNER,))
ADMIN = Actor(user_id=uuid4(), tenant_id=TENANT, roles=(Role.ADMIN,))
MEMBER = Actor(user_id=uuid4(), tenant_id=TENANT, roles=(Role.MEMBER,))
STRANGER = Actor(user_id=uuid4(), tenant_id=uuid4(), roles=(Role.OWNER,))
POLICY = WebhookPolicy(
    retry_first=timedelta(seconds=10),
    retry_max=timedelta(minutes=5),
    give_up_after=timedelta(hours=1),
    disable_after=timedelta(hours=2),
    disable_failures=3,
)
URL = "https://hooks.example.com/tenantry"


class Sender:
    """Answers each request with the next of ``answers`` (the last one again when they run
    out), and keeps what it was sent."""

    def __init__(self, *answers: SendOutcome) -> None:
        self.answers = list(answers) or [SendOutcome(duration_ms=3, status=204)]
        self.sent: list[tuple[str, dict[str, str], bytes]] = []

    async def send(self, url: str, headers: Mapping[str, str], body: bytes) -> SendOutcome:
        self.sent.append((url, dict(headers), body))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


DOWN = SendOutcome(duration_ms=2, status=503, body="busy")
REFUSED = SendOutcome(duration_ms=1, error="connection refused")


def deliveries(world: World) -> list[WebhookDelivery]:
    rows = world.uow.committed.rows_of(WebhookDelivery).values()
    return sorted(rows, key=lambda row: row.created_at)


def endpoint_of(world: World, endpoint_id: Any) -> WebhookEndpoint:
    endpoint: WebhookEndpoint = world.uow.committed.rows_of(WebhookEndpoint)[endpoint_id]
    return endpoint


async def registered(world: World, *events: str, actor: Actor = OWNER) -> tuple[Any, str]:
    issued = await CreateWebhook(world.uow, POLICY)(
        actor, url=URL, events=list(events or ("project.created",))
    )
    return issued.endpoint.id, issued.secret


def deliver(world: World, sender: Sender) -> DeliverWebhooks:
    return DeliverWebhooks(units=lambda: world.uow, sender=sender, clock=world.clock, policy=POLICY)


@given(text=st.text(max_size=500), seconds=st.integers(0, 2**33))
def test_signatures_are_the_standard_webhooks_librarys(text: str, seconds: int) -> None:
    secret, body, at = new_secret(), text.encode(), datetime.fromtimestamp(seconds, UTC)
    headers = signed_headers(secret, uuid4(), at, body)
    message_id, signature = headers["webhook-id"], headers["webhook-signature"]
    assert signature == Webhook(secret).sign(message_id, at, text)
    assert signature != Webhook(new_secret()).sign(message_id, at, text)
    assert signature != Webhook(secret).sign(message_id, at, text + " ")


def test_the_library_verifies_a_delivery_as_sent() -> None:
    secret = new_secret()
    body = b'{"type":"task.completed","data":{"id":"7"}}'
    headers = signed_headers(secret, uuid4(), datetime.now(UTC), body)
    assert Webhook(secret).verify(body, headers) == msgspec.json.decode(body)


def test_which_changes_are_events() -> None:
    assert event_of("task.succeeded", {}) == "task.completed"
    assert event_of("task.reaped", {}) == "task.failed"
    assert event_of("task.stopped", {}) == "task.cancelled"
    assert event_of("user.created", {}) == "user.added"
    assert event_of("user.deleted", {}) == "user.removed"
    assert event_of("file.uploaded", {}) == "file.uploaded"
    # Asked of a pending task, a cancellation ends it; of a running one, its worker does.
    assert event_of("task.cancelled", {"after": {"status": "cancelled"}}) == "task.cancelled"
    assert event_of("task.cancelled", {"after": {"cancel_requested": True}}) is None
    for action in ("task.submitted", "api_key.created", "webhook.created", "tenant.updated"):
        assert event_of(action, {}) is None


def test_backoff_doubles_up_to_its_cap() -> None:
    waits = [POLICY.retry_in(n).total_seconds() for n in range(1, 8)]
    assert waits == [10, 20, 40, 80, 160, 300, 300]


@pytest.mark.parametrize(
    ("url", "allow_http", "problem"),
    [
        ("http://example.com/", False, "https"),
        ("ftp://example.com/", True, "http(s)"),
        ("https:///nohost", False, "host"),
        ("https://user:pw@example.com/", False, "credentials"),
        ("https://example.com/#frag", False, "fragment"),
        ("https://example.com:99999/", False, "absolute"),
        ("not a url", False, "https"),
        ("https://example.com/" + "x" * 2000, False, "at most"),
    ],
)
async def test_bad_urls_are_invalid(url: str, allow_http: bool, problem: str) -> None:
    policy = msgspec.structs.replace(POLICY, allow_http=allow_http)
    with pytest.raises(Invalid) as refused:
        await CreateWebhook(World().uow, policy)(OWNER, url=url, events=["project.created"])
    assert problem in refused.value.fields["url"]


async def test_registering_shows_the_secret_once_and_audits_without_it() -> None:
    world = World()
    issued = await CreateWebhook(world.uow, POLICY)(
        ADMIN, url=URL, events=["project.created", "project.created", "file.uploaded"]
    )
    assert issued.secret.startswith("whsec_")
    assert issued.endpoint.events == ["file.uploaded", "project.created"]
    assert issued.endpoint.created_by == ADMIN.user_id
    (event,) = world.events(TENANT)
    assert event.action == "webhook.created"
    assert issued.secret not in str(event)
    with pytest.raises(Invalid):
        await CreateWebhook(world.uow, POLICY)(OWNER, url=URL, events=["project.exploded"])
    with pytest.raises(Invalid):
        await CreateWebhook(world.uow, POLICY)(OWNER, url=URL, events=[])


async def test_members_may_not_manage_webhooks_and_strangers_find_none() -> None:
    world = World()
    with pytest.raises(Forbidden):
        await CreateWebhook(world.uow, POLICY)(MEMBER, url=URL, events=["project.created"])
    endpoint_id, _ = await registered(world)
    with pytest.raises(Forbidden):
        await DeleteWebhook(world.uow)(MEMBER, endpoint_id)
    with pytest.raises(NotFound):
        await DeleteWebhook(world.uow)(STRANGER, endpoint_id)
    with pytest.raises(NotFound):
        await ListWebhookDeliveries(world.uow)(STRANGER, endpoint_id, limit=10, offset=0)


async def test_a_tenant_has_a_bounded_number_of_endpoints() -> None:
    world = World()
    for _ in range(ENDPOINTS_MAX):
        await registered(world)
    with pytest.raises(Conflict):
        await registered(world)


async def test_a_change_publishes_its_event_to_subscribed_active_endpoints_only() -> None:
    world = World()
    subscribed, _ = await registered(world, "project.created", "project.updated")
    await registered(world, "file.uploaded")
    off, _ = await registered(world, "project.created")
    await UpdateWebhook(world.uow, POLICY)(OWNER, off, expected_version=None, active=False)
    await CreateWebhook(world.uow, POLICY)(STRANGER, url=URL, events=["project.created"])

    project = await CreateProject(world.uow)(MEMBER, name="Apollo")
    (delivery,) = deliveries(world)
    assert delivery.endpoint_id == subscribed
    assert delivery.event_type == "project.created"
    assert delivery.status is DeliveryStatus.PENDING
    data = delivery.payload["data"]
    assert delivery.payload["type"] == "project.created"
    assert data == {
        "tenant_id": str(TENANT),
        "object": "project",
        "id": str(project.id),
        "after": {"name": "Apollo"},
    }
    # A change that fails publishes nothing.
    with pytest.raises(StaleVersion):
        await UpdateProject(world.uow)(MEMBER, project.id, expected_version=7, name="Gemini")
    assert len(deliveries(world)) == 1


async def test_a_delivery_is_signed_and_logged() -> None:
    world = World()
    endpoint_id, secret = await registered(world)
    await CreateProject(world.uow)(MEMBER, name="Apollo")
    sender = Sender()
    (done,) = await deliver(world, sender)()
    assert done.status is DeliveryStatus.SUCCEEDED
    (url, headers, body) = sender.sent[0]
    assert url == URL
    # Signed at the fake clock's time: the library's check of the time would refuse it.
    at = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
    assert at == world.clock.now()
    sign = Webhook(secret).sign(headers["webhook-id"], at, body.decode())
    assert headers["webhook-signature"] == sign
    assert msgspec.json.decode(body)["type"] == "project.created"
    (delivery,) = deliveries(world)
    assert headers["webhook-id"] == str(delivery.event_id)
    assert delivery.status is DeliveryStatus.SUCCEEDED
    assert [(a.attempt, a.succeeded, a.response_status) for a in delivery.log] == [(1, True, 204)]
    assert await deliver(world, sender)() == []
    assert endpoint_of(world, endpoint_id).failures == 0


async def test_a_failing_receiver_is_retried_with_backoff_then_delivered() -> None:
    world = World()
    endpoint_id, _ = await registered(world)
    await CreateProject(world.uow)(MEMBER, name="Apollo")
    sender = Sender(DOWN, REFUSED, SendOutcome(duration_ms=5, status=200))
    run = deliver(world, sender)
    (first,) = await run()
    assert first.status is DeliveryStatus.PENDING
    (delivery,) = deliveries(world)
    assert delivery.next_attempt_at == world.clock.now() + timedelta(seconds=10)
    # Not due before its time.
    world.clock.advance(seconds=9)
    assert await run() == []
    world.clock.advance(seconds=1)
    (second,) = await run()
    assert second.status is DeliveryStatus.PENDING
    assert deliveries(world)[0].next_attempt_at == world.clock.now() + timedelta(seconds=20)
    assert endpoint_of(world, endpoint_id).failures == 2
    world.clock.advance(seconds=20)
    (third,) = await run()
    assert third.status is DeliveryStatus.SUCCEEDED
    log = deliveries(world)[0].log
    assert [(a.response_status, a.error) for a in log] == [
        (503, None),
        (None, "connection refused"),
        (200, None),
    ]
    assert log[0].response_body == "busy"
    # A success ends the endpoint's failing streak.
    assert endpoint_of(world, endpoint_id).failing_since is None
    assert len({headers["webhook-id"] for _, headers, _ in sender.sent}) == 1


async def test_a_delivery_is_given_up_after_its_time_and_can_be_sent_again() -> None:
    world = World()
    endpoint_id, _ = await registered(world)
    await CreateProject(world.uow)(MEMBER, name="Apollo")
    run = deliver(world, Sender(DOWN))
    statuses = []
    for _ in range(20):
        statuses += [done.status for done in await run()]
        world.clock.advance(minutes=5)
    assert statuses[-1] is DeliveryStatus.FAILED
    assert set(statuses[:-1]) == {DeliveryStatus.PENDING}
    (delivery,) = deliveries(world)
    assert delivery.status is DeliveryStatus.FAILED
    # Its tries fit in the hour given.
    assert delivery.log[-1].at - delivery.log[0].at < timedelta(hours=1)

    again = await RedeliverWebhook(world.uow, world.clock)(OWNER, endpoint_id, delivery.id)
    assert again.status is DeliveryStatus.PENDING
    sender = Sender()
    (done,) = await deliver(world, sender)()
    assert done.status is DeliveryStatus.SUCCEEDED
    with pytest.raises(NotFound):
        await RedeliverWebhook(world.uow, world.clock)(STRANGER, endpoint_id, delivery.id)
    with pytest.raises(NotFound):
        await RedeliverWebhook(world.uow, world.clock)(OWNER, uuid4(), delivery.id)


async def test_an_endpoint_failing_long_enough_is_switched_off_and_on_again() -> None:
    world = World()
    endpoint_id, _ = await registered(world)
    for name in ("a", "b", "c", "d"):
        await CreateProject(world.uow)(MEMBER, name=name)
    run = deliver(world, Sender(REFUSED))
    # Three failures at once are not sustained failure.
    assert len(await run()) == 4
    assert endpoint_of(world, endpoint_id).active
    world.clock.advance(hours=2)
    await run()
    endpoint = endpoint_of(world, endpoint_id)
    assert not endpoint.active
    assert endpoint.disabled_reason is not None
    assert "failed since" in endpoint.disabled_reason
    assert [e.action for e in world.events(TENANT)][-1] == "webhook.disabled"
    # Switched off, it is neither claimed nor published to.
    world.clock.advance(hours=1)
    assert await run() == []
    await CreateProject(world.uow)(MEMBER, name="e")
    assert len(deliveries(world)) == 4
    with pytest.raises(Conflict):
        await PingWebhook(world.uow, world.clock)(OWNER, endpoint_id)

    back = await UpdateWebhook(world.uow, POLICY)(
        OWNER, endpoint_id, expected_version=None, active=True
    )
    assert back.active
    assert (back.disabled_reason, back.failing_since, back.failures) == (None, None, 0)
    ping = await PingWebhook(world.uow, world.clock)(OWNER, endpoint_id)
    assert ping.event_type == "webhook.ping"


async def test_nothing_is_sent_for_an_endpoint_switched_off_after_the_claim() -> None:
    world = World()
    endpoint_id, _ = await registered(world)
    await CreateProject(world.uow)(MEMBER, name="Apollo")
    sender = Sender()
    run = deliver(world, sender)
    async with world.uow as uow:
        (claimed,) = await uow.platform(WebhookDispatch).claim(
            lease=timedelta(minutes=1), batch=10, per_endpoint=10
        )
        await uow.commit()
    await UpdateWebhook(world.uow, POLICY)(OWNER, endpoint_id, expected_version=None, active=False)
    skipped = await run.deliver(claimed)
    assert skipped.status is None
    assert sender.sent == []


async def test_the_claim_takes_a_few_of_each_endpoint() -> None:
    world = World()
    busy, _ = await registered(world)
    quiet, _ = await registered(world, "project.updated")
    for n in range(12):
        await CreateProject(world.uow)(MEMBER, name=f"p{n}")
    project = await CreateProject(world.uow)(MEMBER, name="q")
    await UpdateProject(world.uow)(MEMBER, project.id, expected_version=None, name="r")
    run = DeliverWebhooks(
        units=lambda: world.uow,
        sender=Sender(),
        clock=world.clock,
        policy=POLICY,
        batch=6,
        per_endpoint=5,
    )
    first = await run()
    assert sorted(str(d.claimed.endpoint_id) for d in first) == sorted(
        [str(busy)] * 5 + [str(quiet)]
    )


async def test_the_loop_logs_a_failing_round_once_and_the_database_away_without_traceback() -> None:
    rounds: list[BaseException | None] = [
        Unavailable("database unreachable (ConnectionRefusedError)"),
        Unavailable("database unreachable (ConnectionRefusedError)"),
        None,
        RuntimeError("a bug"),
    ]
    finished = asyncio.Event()

    async def deliver() -> list[Delivered]:
        if not rounds:
            finished.set()
            await asyncio.Event().wait()
        if (error := rounds.pop(0)) is not None:
            raise error
        return []

    loop = WebhookLoop(deliver, poll=0)
    stream = io.BytesIO()
    configure_logging(load_settings(environ={"TENANTRY_LOG_JSON": "true"}, env_file=None), stream)
    try:
        await loop.start()
        await asyncio.wait_for(finished.wait(), timeout=10)
        await loop.stop()
    finally:
        configure_logging(load_settings(environ={}, env_file=None))
    logs = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["message"], line.get("error"), "exception" in line) for line in logs] == [
        ("webhook delivery round failed", "database unreachable (ConnectionRefusedError)", False),
        ("webhook delivery works again", None, False),
        ("webhook delivery round failed", "RuntimeError", True),
    ]

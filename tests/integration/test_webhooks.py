"""Webhooks over HTTP on real PostgreSQL and Redis, delivered by the in-process worker to a
real receiver on 127.0.0.1 that checks signatures with the Standard Webhooks library: the
endpoints' API and its refusals, events from changes and tasks, a receiver that fails or is
down for a while, redelivery and ping, the SSRF guard, the claim across workers, and tenants
kept apart."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
import pytest
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY

from tenantry import bootstrap
from tenantry.application.webhooks import PurgeWebhookDeliveries
from tenantry.config import Settings
from tenantry.domain.webhooks import WebhookDispatch

from ..conftest import Client
from ..webhook_receiver import Receiver
from .identity import add_user, owner_session
from .test_health import assert_problem
from .test_tasks import submit, task_settings, wait_for

HOOKS = "/api/v1/webhooks"


def webhook_settings(settings: Settings, **changes: Any) -> Settings:
    return msgspec.structs.replace(
        task_settings(settings),
        webhook_retry_seconds=0.2,
        webhook_poll_seconds=0.05,
        **changes,
    )


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver().serving() as serving:
        yield serving


@pytest.fixture
async def client(settings: Settings, clean_state: None) -> AsyncIterator[Client]:
    app = bootstrap.create_app(webhook_settings(settings), with_worker=True)
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


async def register(
    client: Client, headers: dict[str, str], receiver: Receiver, path: str, *events: str
) -> dict[str, Any]:
    response = await client.post(
        HOOKS, headers=headers, json={"url": receiver.url(path), "events": list(events)}
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    receiver.secrets[path] = created["secret"]
    return created


async def deliveries_of(
    client: Client, headers: dict[str, str], webhook_id: str, *statuses: str
) -> list[dict[str, Any]]:
    """The endpoint's deliveries once each is in one of ``statuses``."""
    deadline = time.monotonic() + 30
    while True:
        listing = await client.get(f"{HOOKS}/{webhook_id}/deliveries", headers=headers)
        assert listing.status_code == 200, listing.text
        items: list[dict[str, Any]] = listing.json()["items"]
        if items and all(item["status"] in statuses for item in items):
            return items
        assert time.monotonic() < deadline, items
        await asyncio.sleep(0.1)


async def test_changes_and_tasks_reach_the_receiver_signed_and_logged(
    client: Client, receiver: Receiver
) -> None:
    owner = await owner_session(client, "acme")
    hook = await register(
        client, owner, receiver, "/acme", "project.created", "task.completed", "file.deleted"
    )
    assert hook["secret"].startswith("whsec_")
    assert hook["active"] is True

    project = (await client.post("/api/v1/projects", headers=owner, json={"name": "A"})).json()
    task = await submit(client, owner, "noop")
    await wait_for(client, owner, task["id"], "completed")
    await receiver.wait_for(2)

    by_type = {r.payload["type"]: r for r in receiver.received}
    assert set(by_type) == {"project.created", "task.completed"}
    assert all(r.verified for r in receiver.received)
    created = by_type["project.created"].payload
    assert created["data"]["id"] == project["id"]
    assert created["data"]["after"] == {"name": "A"}
    assert by_type["task.completed"].payload["data"]["id"] == task["id"]
    assert by_type["task.completed"].headers["user-agent"].startswith("Tenantry-Webhooks")

    items = await deliveries_of(client, owner, hook["id"], "succeeded")
    assert len(items) == 2
    for item in items:
        (attempt,) = item["attempts"]
        assert attempt["succeeded"] is True
        assert attempt["response_status"] == 200
        assert attempt["error"] is None
        assert attempt["duration_ms"] >= 0
        assert item["next_attempt_at"] is None
        assert item["webhook_id"] == hook["id"]
    assert {item["event_id"] for item in items} == {r.webhook_id for r in receiver.received}


def guide_verifier() -> Any:
    """``verify_webhook`` of the Python snippet of docs/webhooks.md, "Receive webhooks"."""
    guide = (Path(__file__).parents[2] / "docs" / "webhooks.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", guide, re.DOTALL)
    assert snippet is not None
    namespace: dict[str, Any] = {}
    exec(compile(snippet[1], "docs/webhooks.md", "exec"), namespace)
    return namespace["verify_webhook"]


async def test_the_guides_verifier_takes_a_delivery_and_refuses_forgeries(
    client: Client, receiver: Receiver
) -> None:
    verify_webhook = guide_verifier()
    owner = await owner_session(client, "acme")
    hook = await register(client, owner, receiver, "/guide", "project.created")
    await client.post(f"{HOOKS}/{hook['id']}/ping", headers=owner)
    await receiver.wait_for(1)
    (sent,) = receiver.received
    assert verify_webhook(hook["secret"], sent.headers, sent.body)
    other = (await register(client, owner, receiver, "/other", "project.created"))["secret"]
    assert not verify_webhook(other, sent.headers, sent.body)
    assert not verify_webhook(hook["secret"], sent.headers, sent.body + b" ")
    assert not verify_webhook(hook["secret"], {**sent.headers, "webhook-id": "x"}, sent.body)
    assert not verify_webhook(hook["secret"], sent.headers, sent.body, tolerance=-1)
    assert not verify_webhook(hook["secret"], {}, sent.body)


async def test_the_secret_is_shown_once(
    client: Client, receiver: Receiver, database_owner: asyncpg.Connection
) -> None:
    owner = await owner_session(client, "acme")
    hook = await register(client, owner, receiver, "/acme", "project.created")
    shown = await client.get(f"{HOOKS}/{hook['id']}", headers=owner)
    listed = await client.get(HOOKS, headers=owner)
    assert "secret" not in shown.json()
    assert hook["secret"] not in shown.text + listed.text
    assert listed.json()["total"] == 1
    trail = await client.get("/api/v1/audit", headers=owner)
    assert hook["secret"] not in trail.text
    assert trail.json()["items"][0]["action"] == "webhook.created"
    stored = await database_owner.fetchval("select secret from webhook_endpoints")
    assert stored == hook["secret"]


async def test_refusals_are_problems(client: Client, receiver: Receiver) -> None:
    owner = await owner_session(client, "acme")
    member = await add_user(client, owner, "mia", ["member"], "acme")
    good = {"url": receiver.url("/x"), "events": ["project.created"]}
    for body in (
        {**good, "events": ["project.exploded"]},
        {**good, "events": []},
        {**good, "url": "ftp://example.com/"},
        {**good, "url": "https://user:pw@example.com/"},
        {**good, "url": "x" * 3000},
        {**good, "url": "https://exa\x00mple.com/"},
        {**good, "extra": 1},
        {"url": receiver.url("/x")},
    ):
        assert_problem(await client.post(HOOKS, headers=owner, json=body), 422)
    assert_problem(await client.post(HOOKS, headers=member, json=good), 403)
    assert_problem(await client.get(HOOKS, headers=member), 403)
    assert_problem(await client.post(HOOKS, json=good), 401)
    bad = await client.post(
        HOOKS, headers={**owner, "content-type": "application/json"}, content=b"\xff{"
    )
    assert bad.status_code in (400, 422)

    hook = await register(client, owner, receiver, "/x", "project.created")
    stale = await client.patch(
        f"{HOOKS}/{hook['id']}",
        headers={**owner, "If-Match": '"7"'},
        json={"description": "late"},
    )
    assert_problem(stale, 412)
    changed = await client.patch(
        f"{HOOKS}/{hook['id']}",
        headers={**owner, "If-Match": f'"{hook["version"]}"'},
        json={"events": ["file.uploaded", "project.deleted"], "description": "ops"},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["events"] == ["file.uploaded", "project.deleted"]
    assert_problem(
        await client.post(f"{HOOKS}/{hook['id']}/deliveries/{hook['id']}/redeliver", headers=owner),
        404,
    )


async def test_another_tenant_finds_nothing(client: Client, receiver: Receiver) -> None:
    acme = await owner_session(client, "acme")
    globex = await owner_session(client, "globex")
    hook = await register(client, acme, receiver, "/acme", "project.created")
    await client.post("/api/v1/projects", headers=globex, json={"name": "theirs"})
    await client.post(f"{HOOKS}/{hook['id']}/ping", headers=acme)
    (ping,) = await deliveries_of(client, acme, hook["id"], "succeeded")

    one = f"{HOOKS}/{hook['id']}"
    for method, path in (
        ("GET", one),
        ("PATCH", one),
        ("DELETE", one),
        ("GET", f"{one}/deliveries"),
        ("POST", f"{one}/ping"),
        ("POST", f"{one}/deliveries/{ping['id']}/redeliver"),
    ):
        body = {"active": False} if method == "PATCH" else None
        response = await client.request(method, path, headers=globex, json=body)
        assert_problem(response, 404)
    assert (await client.get(HOOKS, headers=globex)).json()["total"] == 0
    # globex's project was never acme's event.
    await asyncio.sleep(0.3)
    assert [r.payload["type"] for r in receiver.received] == ["webhook.ping"]


async def test_a_failing_receiver_gets_the_event_when_it_recovers(
    client: Client, receiver: Receiver
) -> None:
    owner = await owner_session(client, "acme")
    hook = await register(client, owner, receiver, "/flaky", "project.created")
    before = {outcome: attempts(outcome) for outcome in ("delivered", "retrying")}
    receiver.answers["/flaky"] = [500, 503, 500]
    await client.post("/api/v1/projects", headers=owner, json={"name": "A"})
    (item,) = await deliveries_of(client, owner, hook["id"], "succeeded")
    assert [a["response_status"] for a in item["attempts"]] == [500, 503, 500, 200]
    assert [a["succeeded"] for a in item["attempts"]] == [False, False, False, True]
    assert item["attempts"][0]["response_body"] == "nope"
    # The same message at each attempt, each signed anew.
    assert len({r.webhook_id for r in receiver.received}) == 1
    assert all(r.verified for r in receiver.received)
    # Counted once the worker logs the round, just after it recorded it.
    deadline = time.monotonic() + 5
    while attempts("delivered") - before["delivered"] < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert attempts("retrying") - before["retrying"] == 3
    assert attempts("delivered") - before["delivered"] == 1


def attempts(outcome: str) -> float:
    value = REGISTRY.get_sample_value("tenantry_webhook_attempts_total", {"outcome": outcome})
    return value or 0.0


async def test_a_receiver_down_for_a_while_gets_the_event_when_it_is_back(
    client: Client,
) -> None:
    owner = await owner_session(client, "acme")
    later = Receiver()
    hook = await register(client, owner, later, "/later", "project.created")
    await client.post("/api/v1/projects", headers=owner, json={"name": "A"})
    deadline = time.monotonic() + 30
    while True:
        (item,) = (await client.get(f"{HOOKS}/{hook['id']}/deliveries", headers=owner)).json()[
            "items"
        ]
        if len(item["attempts"]) >= 2:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert item["status"] == "pending"
    assert item["attempts"][0]["error"] == "connection refused"
    async with later.serving():
        (item,) = await deliveries_of(client, owner, hook["id"], "succeeded")
        assert len(later.received) == 1
        assert later.received[0].verified


async def test_redeliver_and_ping(client: Client, receiver: Receiver) -> None:
    owner = await owner_session(client, "acme")
    hook = await register(client, owner, receiver, "/acme", "project.created")
    await client.post("/api/v1/projects", headers=owner, json={"name": "A"})
    (item,) = await deliveries_of(client, owner, hook["id"], "succeeded")
    # A delivery's id: a UUIDv7 of its event's time (its event's id up to the variant).
    delivery, event = UUID(item["id"]), UUID(item["event_id"])
    assert (delivery.version, delivery.int >> 64) == (7, event.int >> 64)
    again = await client.post(
        f"{HOOKS}/{hook['id']}/deliveries/{item['id']}/redeliver", headers=owner
    )
    assert again.status_code == 202, again.text
    assert again.json()["status"] == "pending"
    await receiver.wait_for(2)
    assert receiver.received[0].webhook_id == receiver.received[1].webhook_id

    ping = await client.post(f"{HOOKS}/{hook['id']}/ping", headers=owner)
    assert ping.status_code == 202
    assert ping.json()["event_type"] == "webhook.ping"
    await receiver.wait_for(3)
    assert receiver.received[2].payload["type"] == "webhook.ping"
    assert receiver.received[2].verified

    off = await client.patch(f"{HOOKS}/{hook['id']}", headers=owner, json={"active": False})
    assert off.json()["active"] is False
    assert_problem(await client.post(f"{HOOKS}/{hook['id']}/ping", headers=owner), 409)
    assert (await client.delete(f"{HOOKS}/{hook['id']}", headers=owner)).status_code == 204
    assert_problem(await client.get(f"{HOOKS}/{hook['id']}/deliveries", headers=owner), 404)


async def test_production_refuses_loopback_at_send_time(
    settings: Settings, clean_state: None, receiver: Receiver
) -> None:
    production = webhook_settings(settings, webhook_allowed_networks=[], webhook_allow_http=True)
    app = bootstrap.create_app(production, with_worker=True)
    async with AsyncTestClient(app=app) as client:
        owner = await owner_session(client, "acme")
        hooks = [
            await register(client, owner, receiver, "/direct", "project.created"),
            (
                await client.post(
                    HOOKS,
                    headers=owner,
                    json={
                        "url": f"http://localhost:{receiver.port}/named",
                        "events": ["project.created"],
                    },
                )
            ).json(),
        ]
        await client.post("/api/v1/projects", headers=owner, json={"name": "A"})
        for hook in hooks:
            deadline = time.monotonic() + 30
            while True:
                (item,) = (
                    await client.get(f"{HOOKS}/{hook['id']}/deliveries", headers=owner)
                ).json()["items"]
                if item["attempts"]:
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            assert item["attempts"][0]["error"] in (
                "address 127.0.0.1 is not allowed",
                "address ::1 is not allowed",
            )
    assert receiver.received == []


async def test_https_is_required_unless_allowed(settings: Settings, clean_state: None) -> None:
    strict = webhook_settings(settings, webhook_allow_http=False)
    async with AsyncTestClient(app=bootstrap.create_app(strict)) as client:
        owner = await owner_session(client, "acme")
        refused = await client.post(
            HOOKS,
            headers=owner,
            json={"url": "http://hooks.example.com/", "events": ["project.created"]},
        )
        assert_problem(refused, 422)
        assert "https" in refused.text


async def test_workers_claim_disjoint_deliveries_and_a_lapsed_lease_again(
    settings: Settings, clean_state: None, receiver: Receiver
) -> None:
    # No worker here: the claims below are the only ones.
    async with AsyncTestClient(app=bootstrap.create_app(webhook_settings(settings))) as client:
        owner = await owner_session(client, "acme")
        await register(client, owner, receiver, "/acme", "project.created")
        for n in range(30):
            await client.post("/api/v1/projects", headers=owner, json={"name": f"p{n}"})
    container = bootstrap.Container(settings)

    async def claim() -> set[UUID]:
        async with container.unit_of_work() as uow:
            claimed = await uow.platform(WebhookDispatch).claim(
                lease=timedelta(seconds=1), batch=20, per_endpoint=20
            )
            await asyncio.sleep(0.2)  # both transactions open at once
            await uow.commit()
        return {due.id for due in claimed}

    try:
        first, second = await asyncio.gather(claim(), claim())
        assert first.isdisjoint(second)
        # Together every due delivery, each at most its batch: how they split depends on how
        # the two scans interleave (each skips the rows the other has locked so far).
        assert len(first | second) == 30
        assert max(len(first), len(second)) <= 20
        # Leased: not due again until the lease ends, when a worker that died would leave it.
        assert await claim() == set()
        await asyncio.sleep(1.1)
        assert len(await claim() & (first | second)) == 20
    finally:
        await container.close()
        await container.alchemy.get_engine().dispose()


async def test_the_purge_takes_finished_deliveries_past_the_retention_of_every_tenant(
    settings: Settings, database_owner: asyncpg.Connection, receiver: Receiver
) -> None:
    async with AsyncTestClient(app=bootstrap.create_app(webhook_settings(settings))) as client:
        for slug in ("acme", "globex"):
            owner = await owner_session(client, slug)
            await register(client, owner, receiver, f"/{slug}", "project.created")
            for n in range(3):
                await client.post("/api/v1/projects", headers=owner, json={"name": f"p{n}"})
    # Two of each tenant's three finished long ago; the third still pending.
    await database_owner.execute(
        "update webhook_deliveries set status = 'succeeded', created_at = now() - interval '40 days' "
        "where id in (select id from webhook_deliveries d where (select count(*) from "
        "webhook_deliveries o where o.tenant_id = d.tenant_id and o.id < d.id) < 2)"
    )
    container = bootstrap.Container(settings)
    try:
        purge = PurgeWebhookDeliveries(units=container.unit_of_work, clock=container.clock)
        assert await purge(timedelta(days=30), batch=1) == 4
        left = await database_owner.fetch("select tenant_id, status from webhook_deliveries")
        assert sorted(row["status"] for row in left) == ["pending", "pending"]
        assert len({row["tenant_id"] for row in left}) == 2
    finally:
        await container.close()
        await container.alchemy.get_engine().dispose()

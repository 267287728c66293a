"""Usage metering on real Redis and PostgreSQL: requests, bytes and task time counted in each
process, gathered in Redis, folded into the tenant's days by the worker's step, read back over
HTTP by owners and admins and, across tenants, by superusers."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
import msgspec
import pytest
import uvicorn
from redis.asyncio import Redis

from tenantry import bootstrap
from tenantry.application.usage import FoldUsage, ReportBusiestTenants
from tenantry.config import Settings
from tenantry.domain.usage import Counter, RequestClass, UsageRepository
from tenantry.infrastructure.cache.usage import RedisUsageBuffer, RedisUsageMeter
from tenantry.infrastructure.clock import SystemClock
from tenantry.infrastructure.embedded import EmbeddedRedis
from tenantry.presentation.errors import PARAMETER_ERRORS

from ..conftest import Client, superuser_headers, uvicorn_serving
from .identity import add_user, owner_session
from .test_files import png
from .test_health import assert_problem
from .test_tenancy import _uvicorn_options, free_port


class Metered:
    """The API's client and the container whose meter counts its requests."""

    def __init__(self, client: Client, container: bootstrap.Container) -> None:
        self.client = client
        self.container = container
        self.meter = cast("RedisUsageMeter", container.usage)
        self.buffer = RedisUsageBuffer(container.redis)

    async def fold(self) -> int:
        """What the processes' flush and the worker's next step would do."""
        await self.meter.flush()
        return await FoldUsage(self.container.unit_of_work, self.buffer)()

    async def usage(self, headers: dict[str, str], **params: Any) -> dict[str, Any]:
        response = await self.client.get("/api/v1/usage", headers=headers, params=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Metered]:
    """A real server in this event loop (the test client would run the app in a loop of its
    own), so that the test can flush its meter and fold with its container."""
    served = msgspec.structs.replace(settings, host="127.0.0.1", port=free_port())
    container = bootstrap.Container(served)
    app = bootstrap.create_app(served, container=container)
    async with (
        uvicorn_serving(uvicorn.Config(app, **_uvicorn_options(served))),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}") as http,
    ):
        yield Metered(cast("Client", http), container)


@pytest.fixture
async def metered(settings: Settings, clean_state: None) -> AsyncIterator[Metered]:
    async with serving(settings) as found:
        yield found


def today() -> str:
    return datetime.now(UTC).date().isoformat()


async def test_a_tenants_requests_bytes_and_users_are_counted_by_day(metered: Metered) -> None:
    client = metered.client
    owner = await owner_session(client, "acme")
    other = await owner_session(client, "globex")
    member = await add_user(client, owner, "mia", ["member"], "acme")
    for _ in range(3):
        assert (await client.get("/api/v1/projects", headers=owner)).status_code == 200
    assert (await client.get("/api/v1/projects", headers=member)).status_code == 200
    created = await client.post("/api/v1/projects", headers=owner, json={"name": "Apollo"})
    assert created.status_code == 201
    image = png(200, 200, 32_000)
    uploaded = await client.post(
        "/api/v1/files", headers=owner, files={"file": ("a.png", image, "image/png")}
    )
    assert uploaded.status_code == 201, uploaded.text
    content = f"/api/v1/files/{uploaded.json()['id']}/content"
    assert (await client.get(content, headers=owner)).content == image
    ranged = await client.get(content, headers={**owner, "Range": "bytes=0-99"})
    assert ranged.status_code == 206
    task = await client.post("/api/v1/tasks", headers=owner, json={"type": "noop", "config": {}})
    assert task.status_code == 202
    # Refused requests are answered work too; another tenant's count is its own.
    assert (await client.get(f"/api/v1/projects/{uuid.uuid4()}", headers=owner)).status_code == 404
    assert (await client.get("/api/v1/projects", headers=other)).status_code == 200

    assert await metered.fold() >= 2
    (day,) = (await metered.usage(owner))["days"]
    # Reads: 3 + 1 lists, 2 downloads, the 404; writes: the user added, the project created.
    assert day["day"] == today()
    assert {key: day[key] for key in ("requests_read", "requests_write")} == {
        "requests_read": 7,
        "requests_write": 2,
    }
    assert day["requests_upload"] == day["requests_task"] == 1
    assert day["requests"] == 11
    assert day["bytes_uploaded"] == len(image)
    assert day["bytes_downloaded"] == len(image) + 100
    assert day["active_users"] == 2
    assert day["bytes_stored_peak"] == day["bytes_stored_end"] == len(image)
    # The reading above is counted too, at the next fold.
    await metered.fold()
    (again,) = (await metered.usage(owner))["days"]
    assert again["requests_read"] == 8
    (theirs,) = (await metered.usage(other))["days"]
    assert (theirs["requests"], theirs["active_users"]) == (1, 1)
    assert theirs["bytes_stored_peak"] == 0

    # What the tenant stores falls; the day's peak stays.
    file_path = f"/api/v1/files/{uploaded.json()['id']}"
    assert (await client.delete(file_path, headers=owner)).status_code == 204
    await metered.fold()
    (after,) = (await metered.usage(owner))["days"]
    assert (after["bytes_stored_peak"], after["bytes_stored_end"]) == (len(image), 0)


async def test_task_runs_and_seconds_are_counted_by_type(metered: Metered) -> None:
    owner = await owner_session(metered.client, "acme")
    tenant = uuid.UUID(
        (await metered.client.get("/api/v1/auth/me", headers=owner)).json()["tenant_id"]
    )
    metered.meter.task_ran(tenant, "noop", 0.25)
    metered.meter.task_ran(tenant, "noop", 0.5)
    metered.meter.task_ran(tenant, "file.inspect", 2.0)
    await metered.fold()
    (day,) = (await metered.usage(owner))["days"]
    assert day["tasks"] == {
        "file.inspect": {"runs": 1, "seconds": 2.0},
        "noop": {"runs": 2, "seconds": 0.75},
    }


async def test_a_tally_folded_twice_is_added_once(metered: Metered) -> None:
    owner = await owner_session(metered.client, "acme")
    assert (await metered.client.get("/api/v1/projects", headers=owner)).status_code == 200
    await metered.meter.flush()
    (claimed,) = await metered.buffer.claim()
    async with metered.container.unit_of_work() as uow:
        assert await uow.repository(UsageRepository, claimed.tenant_id).fold(
            claimed, stored_bytes=0
        )
        await uow.commit()
    # The worker died here: folded, not forgotten. The next step finds it again, adds nothing.
    (again,) = await metered.buffer.claim()
    assert again.flush_id == claimed.flush_id
    assert await FoldUsage(metered.container.unit_of_work, metered.buffer)() == 0
    assert await metered.buffer.claim() == []
    (day,) = (await metered.usage(owner))["days"]
    assert day["requests_read"] == 1


async def test_counts_wait_in_memory_while_redis_is_unreachable(
    settings: Settings, redis_url: str, clean_state: None
) -> None:
    tenant, user = uuid.uuid4(), uuid.uuid4()
    # A port nothing listens on: every flush fails.
    down = Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.5)
    meter = RedisUsageMeter(down, SystemClock(), interval=timedelta(seconds=60))
    for _ in range(3):
        meter.request(tenant, user, RequestClass.WRITE)
        meter.add(tenant, Counter.BYTES_UPLOADED, 10)
        await meter.flush()
    await down.aclose()
    # Redis is back: everything counted meanwhile goes with the first flush.
    up = Redis.from_url(redis_url)
    meter.redis = up
    await meter.flush()
    (tally,) = await RedisUsageBuffer(up).claim()
    await up.aclose()
    assert tally.counters == {Counter.REQUESTS_WRITE: 3, Counter.BYTES_UPLOADED: 30}
    assert tally.active_users == 1


async def test_processes_counting_while_the_worker_folds_lose_and_double_nothing(
    metered: Metered, redis_url: str
) -> None:
    owner = await owner_session(metered.client, "acme")
    me = (await metered.client.get("/api/v1/auth/me", headers=owner)).json()
    tenant = uuid.UUID(me["tenant_id"])
    await metered.fold()  # what signing in counted
    (before,) = (await metered.usage(owner))["days"]
    await metered.fold()  # the reading just now
    clients = [Redis.from_url(redis_url) for _ in range(3)]
    meters = [RedisUsageMeter(c, SystemClock(), interval=timedelta(seconds=60)) for c in clients]
    folder = FoldUsage(metered.container.unit_of_work, RedisUsageBuffer(clients[0]))
    rounds, each = 30, 7

    async def count(meter: RedisUsageMeter) -> None:
        for _ in range(rounds):
            for _ in range(each):
                meter.request(tenant, uuid.UUID(me["id"]), RequestClass.WRITE)
            await meter.flush()
            await asyncio.sleep(0)

    async def fold_meanwhile() -> None:
        for _ in range(rounds):
            await folder()
            await asyncio.sleep(0)

    await asyncio.gather(*(count(meter) for meter in meters[1:]), fold_meanwhile())
    await folder()
    for client in clients:
        await client.aclose()
    (after,) = (await metered.usage(owner))["days"]
    assert after["requests_write"] - before["requests_write"] == 2 * rounds * each


async def test_owners_and_admins_read_their_usage_members_may_not(metered: Metered) -> None:
    client = metered.client
    owner = await owner_session(client, "acme")
    admin = await add_user(client, owner, "ada", ["admin"], "acme")
    member = await add_user(client, owner, "mia", ["member"], "acme")
    await metered.fold()
    assert (await metered.usage(admin))["days"]
    assert_problem(await client.get("/api/v1/usage", headers=member), 403)
    assert_problem(await client.get("/api/v1/usage"), 401)
    body = await metered.usage(owner, **{"from": "2026-01-01", "to": "2026-01-31"})
    assert (body["from"], body["to"], body["days"]) == ("2026-01-01", "2026-01-31", [])
    default = await metered.usage(owner)
    assert default["to"] == today()
    assert date.fromisoformat(default["to"]) - date.fromisoformat(default["from"]) == timedelta(29)


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2026-02-30"},
        {"to": "yesterday"},
        {"from": "2026-03-02", "to": "2026-03-01"},
        {"from": "2020-01-01", "to": "2026-01-01"},
        {"from": "2026-01-01\x00"},
    ],
)
async def test_bad_ranges_are_refused(metered: Metered, params: dict[str, str]) -> None:
    owner = await owner_session(metered.client, "acme")
    response = await metered.client.get("/api/v1/usage", headers=owner, params=params)
    assert_problem(response, 422)


async def test_a_superuser_lists_every_tenants_usage_sorted_as_json_or_csv(
    metered: Metered, settings: Settings
) -> None:
    client = metered.client
    acme = await owner_session(client, "acme")
    globex = await owner_session(client, "globex")
    for _ in range(4):
        await client.get("/api/v1/projects", headers=globex)
    await client.get("/api/v1/projects", headers=acme)
    root = await superuser_headers(client, settings)
    await metered.fold()

    listed = await client.get("/api/v1/admin/usage", headers=root)
    assert listed.status_code == 200, listed.text
    tenants = listed.json()["tenants"]
    assert [t["slug"] for t in tenants][:2] == ["globex", "acme"]
    assert tenants[0]["requests"] == tenants[0]["requests_read"] == 4
    ascending = await client.get(
        "/api/v1/admin/usage", headers=root, params={"sort": "slug", "order": "asc"}
    )
    slugs = [t["slug"] for t in ascending.json()["tenants"]]
    assert slugs == sorted(slugs)

    exported = await client.get("/api/v1/admin/usage", headers=root, params={"format": "csv"})
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert (rows[0]["slug"], rows[0]["requests"]) == ("globex", "4")

    assert_problem(await client.get("/api/v1/admin/usage", headers=acme), 403)
    assert_problem(
        await client.get("/api/v1/admin/usage", headers=acme, params={"format": "csv"}), 403
    )
    xml = await client.get("/api/v1/admin/usage", headers=root, params={"format": "xml"})
    assert xml.status_code in PARAMETER_ERRORS
    bad = await client.get("/api/v1/admin/usage", headers=root, params={"sort": "password_hash"})
    assert_problem(bad, 422)


async def test_metering_switched_off_counts_nothing(settings: Settings, clean_state: None) -> None:
    off = msgspec.structs.replace(settings, usage_metering=False)
    async with serving(off) as metered:
        client, container = metered.client, metered.container
        owner = await owner_session(client, "acme")
        await client.get("/api/v1/projects", headers=owner)
        assert await FoldUsage(container.unit_of_work, RedisUsageBuffer(container.redis))() == 0
        body = (await client.get("/api/v1/usage", headers=owner)).json()
    assert body["days"] == []


async def test_a_tally_of_a_tenant_erased_meanwhile_is_dropped(
    metered: Metered, database_owner: asyncpg.Connection
) -> None:
    owner = await owner_session(metered.client, "acme")
    me = (await metered.client.get("/api/v1/auth/me", headers=owner)).json()
    await metered.meter.flush()
    await database_owner.execute("delete from tenants where id = $1", uuid.UUID(me["tenant_id"]))
    assert await FoldUsage(metered.container.unit_of_work, metered.buffer)() == 0
    assert await metered.buffer.claim() == []


async def set_limits(
    client: Client, root: dict[str, str], tenant_id: str, limits: dict[str, Any] | None
) -> httpx.Response:
    return await client.patch(
        f"/api/v1/admin/tenants/{tenant_id}", headers=root, json={"settings": {"limits": limits}}
    )


async def test_a_tenants_daily_request_limit_answers_429_naming_it(
    settings: Settings, clean_state: None
) -> None:
    # No flush but the test's own: the totals the limit is checked against stay put.
    async with serving(msgspec.structs.replace(settings, usage_flush_seconds=3600)) as metered:
        client = metered.client
        acme = await owner_session(client, "acme")
        globex = await owner_session(client, "globex")
        root = await superuser_headers(client, settings)
        tenant_id = (await client.get("/api/v1/auth/me", headers=acme)).json()["tenant_id"]
        for bad in ({"requests_per_day": 0}, {"requests_per_day": "many"}, {"per_hour": 5}):
            assert_problem(await set_limits(client, root, tenant_id, bad), 422)
        limited = await set_limits(client, root, tenant_id, {"requests_per_day": 5})
        assert limited.status_code == 200, limited.text
        await metered.fold()  # the worker publishes the limits
        await metered.meter.flush()  # the process reads them, and the day's totals

        # One request counted already (GET /auth/me): four more pass, the fifth does not.
        answers = [(await client.get("/api/v1/projects", headers=acme)) for _ in range(5)]
        assert [r.status_code for r in answers] == [200, 200, 200, 200, 429]
        refused = assert_problem(answers[-1], 429)
        assert "requests_per_day (5)" in refused["detail"]
        assert refused["errors"] == [{"field": "requests_per_day", "message": "at most 5 a day"}]
        assert 0 < int(answers[-1].headers["Retry-After"]) <= 86400
        platform = (await client.get("/api/v1/auth/me", headers=root)).json()["tenant_id"]
        limit_platform = await set_limits(client, root, platform, {"requests_per_day": 1})
        assert_problem(limit_platform, 403)
        # Another tenant, and the platform's superuser, are not held to it.
        assert (await client.get("/api/v1/projects", headers=globex)).status_code == 200
        assert (await client.get("/api/v1/admin/tenants", headers=root)).status_code == 200

        # Lifted: the next fold publishes no limit, the next flush reads none.
        assert (await set_limits(client, root, tenant_id, None)).status_code == 200
        await metered.fold()
        await metered.meter.flush()
        assert (await client.get("/api/v1/projects", headers=acme)).status_code == 200


async def test_a_tenants_task_seconds_limit_refuses_new_tasks_only(
    settings: Settings, clean_state: None
) -> None:
    async with serving(msgspec.structs.replace(settings, usage_flush_seconds=3600)) as metered:
        client = metered.client
        acme = await owner_session(client, "acme")
        root = await superuser_headers(client, settings)
        tenant_id = (await client.get("/api/v1/auth/me", headers=acme)).json()["tenant_id"]
        limits = {"task_seconds_per_day": 2}
        assert (await set_limits(client, root, tenant_id, limits)).status_code == 200
        # What a worker counted: 2.5 s of handlers today.
        metered.meter.task_ran(uuid.UUID(tenant_id), "noop", 2.5)
        await metered.fold()
        await metered.meter.flush()
        noop = {"type": "noop", "config": {}}
        refused = await client.post("/api/v1/tasks", headers=acme, json=noop)
        problem = assert_problem(refused, 429)
        assert problem["errors"] == [
            {"field": "task_seconds_per_day", "message": "at most 2 a day"}
        ]
        assert (await client.get("/api/v1/tasks", headers=acme)).status_code == 200
        assert (await client.get("/api/v1/projects", headers=acme)).status_code == 200


class RecordedGauges:
    def __init__(self) -> None:
        self.shown: list[tuple[str, int]] = []

    def busiest(self, tenants: list[tuple[str, int]]) -> None:
        self.shown = tenants


async def test_the_busiest_tenants_of_the_day_are_reported_by_slug(metered: Metered) -> None:
    client = metered.client
    for slug, requests in (("acme", 3), ("globex", 5), ("initech", 1)):
        owner = await owner_session(client, slug)
        for _ in range(requests):
            assert (await client.get("/api/v1/projects", headers=owner)).status_code == 200
    await metered.fold()
    gauges = RecordedGauges()
    report = ReportBusiestTenants(
        metered.container.unit_of_work, metered.buffer, gauges, SystemClock(), count=2
    )
    assert await report() == [("globex", 5), ("acme", 3)]
    assert gauges.shown == [("globex", 5), ("acme", 3)]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own, without persistence: a restart loses what it held."""
    server = EmbeddedRedis(tmp_path / "redis", persist=False)
    server.start()
    yield server
    server.stop()


async def test_a_redis_restart_loses_at_most_what_gathered_since_the_last_fold(
    settings: Settings, redis_server: EmbeddedRedis, clean_state: None
) -> None:
    own = msgspec.structs.replace(
        settings, redis_url=redis_server.url, usage_flush_seconds=3600, db_connect_timeout=1.0
    )
    async with serving(own) as metered:
        client = metered.client
        owner = await owner_session(client, "acme")

        async def reads(count: int) -> None:
            for _ in range(count):
                assert (await client.get("/api/v1/projects", headers=owner)).status_code == 200

        await reads(3)
        await metered.fold()  # 3 folded
        await reads(4)
        await metered.meter.flush()  # 4 gathered in Redis, not yet folded...
        redis_server.stop()  # ...and lost with it
        await reads(2)
        await metered.meter.flush()  # Redis down: the 2 stay in the process
        assert metered.meter.unreachable
        redis_server.start()
        await reads(1)
        await metered.fold()  # 2 + 1, and nothing twice
        (day,) = (await metered.usage(owner))["days"]
    assert day["requests_read"] == 3 + 2 + 1

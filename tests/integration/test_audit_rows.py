"""The audit trail's rows, as the app role: appended and paged newest first within the tenant,
never updated or deleted by the app, removed only by the retention purge (migration
0011_audit_events), which reaches the one tenant it is given and never the last day (migration
0012_audit_purge_floor)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker

from tenantry import bootstrap
from tenantry.application.audit import PurgeAuditEvents
from tenantry.config import Settings
from tenantry.domain.audit import AUDIT_PAGE_MAX, ActorType, AuditQuery, AuditRepository
from tenantry.infrastructure.clock import SystemClock
from tenantry.infrastructure.db.audit import SqlAuditRepository
from tenantry.infrastructure.db.tenancy import TenantSession
from tenantry.infrastructure.db.uow import SqlUnitOfWork
from tenantry.infrastructure.jobs.worker import audit_retention

from ..conftest import plain_url
from .test_tenancy import engine_for

Units = Callable[[uuid.UUID], AbstractAsyncContextManager[tuple[SqlUnitOfWork, AuditRepository]]]
DAY = timedelta(days=1)


@pytest.fixture
async def units(app_database_url: str) -> AsyncIterator[Units]:
    """A unit of work as the app role and the audit repository of the tenant asked for."""
    engine = engine_for(app_database_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False, class_=TenantSession)

    @asynccontextmanager
    async def one(tenant: uuid.UUID) -> AsyncIterator[tuple[SqlUnitOfWork, AuditRepository]]:
        async with sessions() as session:
            uow = SqlUnitOfWork(session)
            yield uow, uow.repository(AuditRepository, tenant)

    yield one
    await engine.dispose()


@pytest.fixture
async def tenants(database_owner: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    rows = await database_owner.fetch(
        "insert into tenants (id, name, slug, created_at, updated_at) "
        "select gen_random_uuid(), 'Tenant ' || i, 'audit-' || i, now(), now() "
        "from generate_series(1, 2) i returning id"
    )
    a, b = (row["id"] for row in rows)
    return a, b


def event(**values: Any) -> dict[str, Any]:
    return {
        "actor_type": ActorType.USER.value,
        "actor_id": uuid.uuid4(),
        "action": "project.created",
        "target_type": "project",
        "target_id": uuid.uuid4(),
        "request_id": uuid.uuid4().hex,
        "client": "203.0.113.7",
        "changes": {"name": [None, "Apollo"]},
        **values,
    }


async def test_events_are_added_and_paged_newest_first_within_the_tenant(
    units: Units, tenants: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, b = tenants
    actor, target = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    async with units(a) as (uow, audit):
        added = [
            await audit.add(**event(action="project.created", created_at=now - 3 * DAY)),
            await audit.add(**event(actor_id=actor, created_at=now - 2 * DAY)),
            await audit.add(
                **event(action="project.deleted", target_id=target, created_at=now - DAY)
            ),
            await audit.add(
                **event(
                    actor_type=ActorType.API_KEY.value,
                    api_key_id=uuid.uuid4(),
                    target_type="document",
                    created_at=now,
                )
            ),
        ]
        await uow.commit()
    first = added[0]
    assert first.tenant_id == a
    assert first.changes == {"name": [None, "Apollo"]}
    assert first.created_at == now - 3 * DAY
    newest_first = sorted(added, key=lambda e: e.id, reverse=True)

    async with units(a) as (_, audit):
        assert await audit.page(AuditQuery()) == newest_first
        # A cursor: each page starts after the last id of the one before.
        pages, before = [], None
        while page := await audit.page(AuditQuery(limit=3, before=before)):
            pages.append(page)
            before = page[-1].id
        assert [len(page) for page in pages] == [3, 1]
        assert [e for page in pages for e in page] == newest_first
        for query, expected in (
            (AuditQuery(actor_id=actor), [added[1]]),
            (AuditQuery(action="project.deleted"), [added[2]]),
            (AuditQuery(target_type="document"), [added[3]]),
            (AuditQuery(target_type="project", target_id=target), [added[2]]),
            (AuditQuery(since=now - 2 * DAY), [added[3], added[2], added[1]]),
            (AuditQuery(until=now - DAY), [added[1], added[0]]),
            (AuditQuery(since=now - 2 * DAY, until=now, action="project.created"), [added[1]]),
            (AuditQuery(action="project.created", before=added[1].id), [added[0]]),
        ):
            assert await audit.page(query) == expected, query
        assert await audit.get(first.id) == first

    async with units(b) as (_, audit):
        assert await audit.page(AuditQuery()) == []
        assert await audit.get(first.id) is None
        assert await audit.page(AuditQuery(actor_id=actor)) == []


async def test_a_page_is_capped(units: Units, tenants: tuple[uuid.UUID, uuid.UUID]) -> None:
    a, _ = tenants
    async with units(a) as (uow, audit):
        await audit.add_many([event() for _ in range(AUDIT_PAGE_MAX + 1)])
        await uow.commit()
    async with units(a) as (_, audit):
        assert len(await audit.page(AuditQuery(limit=AUDIT_PAGE_MAX + 100))) == AUDIT_PAGE_MAX
        assert len(await audit.page(AuditQuery(limit=5))) == 5


async def test_an_appended_event_is_written_by_the_commit_and_only_by_it(
    units: Units, tenants: tuple[uuid.UUID, uuid.UUID], database_owner: asyncpg.Connection
) -> None:
    a, b = tenants
    # Every character that could end a quote or escape one, and a dollar-quote of its own.
    name = "it's $$ $a$ \\ \" \u00e9\U0001f600 $"
    # asyncpg's own UUID type, as an actor read from a row has it.
    actor = await database_owner.fetchval("select gen_random_uuid()")
    async with units(a) as (uow, audit):
        await audit.append(
            **event(action="project.created", actor_id=actor, changes={"after": {"name": name}})
        )
        # Another tenant's event in the same transaction goes under that tenant's policy.
        await uow.repository(AuditRepository, b).append(**event(action="user.created"))
        assert await database_owner.fetchval("select count(*) from audit_events") == 0
        await uow.commit()
    rows = await database_owner.fetch(
        "select tenant_id, action, actor_id, changes from audit_events"
    )
    assert {(row["tenant_id"], row["action"]) for row in rows} == {
        (a, "project.created"),
        (b, "user.created"),
    }
    (written,) = [row for row in rows if row["tenant_id"] == a]
    assert json.loads(written["changes"]) == {"after": {"name": name}}
    assert written["actor_id"] == actor

    async with units(a) as (uow, audit):
        await audit.append(**event(action="project.deleted"))
        await uow.rollback()
    async with units(a) as (_, audit):
        await audit.append(**event(action="project.deleted"))
    assert await database_owner.fetchval("select count(*) from audit_events") == 2


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.text(max_size=60))
@example(value="\x00")
@example(value="E'\\'' \\000 $$")
async def test_any_text_reaches_the_row_as_it_was_or_commits_nothing(
    units: Units, tenants: tuple[uuid.UUID, uuid.UUID], value: str
) -> None:
    """The appended row's values travel as SQL literals in the commit's round trip: whatever
    the text, it is written as given or, holding a NUL no PostgreSQL text can, refused with
    the whole transaction."""
    a, _ = tenants
    async with units(a) as (uow, audit):
        await audit.append(**event(client=value, changes={"after": {value: value}}))
        if "\x00" in value:
            with pytest.raises(asyncpg.PostgresError):
                await uow.commit()
            return
        await uow.commit()
    async with units(a) as (_, audit):
        (newest,) = await audit.page(AuditQuery(limit=1))
    assert newest.client == value
    assert newest.changes == {"after": {value: value}}


async def test_events_written_after_the_erasure_emptied_the_trail_go_with_the_tenant(
    units: Units,
    tenants: tuple[uuid.UUID, uuid.UUID],
    database_owner: asyncpg.Connection,
    app_database_url: str,
) -> None:
    """No foreign key ties an event to its tenant (0017_audit_without_tenant_key): removing
    the erased tenant's row removes its events itself, and only its own."""
    a, b = tenants
    for tenant in (a, b):
        async with units(tenant) as (uow, audit):
            await audit.append(**event())
            await uow.commit()
    await database_owner.execute("update tenants set status = 'suspended' where id = $1", a)
    await database_owner.execute(
        "insert into tenant_erasures (id, erased_tenant_id, slug, requested_by_type, state, "
        "created_at, updated_at) values (gen_random_uuid(), $1, 'audit-1', 'superuser', "
        "'running', now(), now())",
        a,
    )
    app_role = await asyncpg.connect(plain_url(app_database_url))
    try:
        assert await app_role.fetchval("select remove_erased_tenant($1)", a) is True
    finally:
        await app_role.close()
    rows = await database_owner.fetch("select tenant_id from audit_events")
    assert [row["tenant_id"] for row in rows] == [b]
    assert await database_owner.fetchval("select count(*) from tenants where id = $1", a) == 0


async def test_an_event_that_cannot_be_written_commits_nothing(
    units: Units, tenants: tuple[uuid.UUID, uuid.UUID], database_owner: asyncpg.Connection
) -> None:
    a, _ = tenants
    async with units(a) as (uow, audit):
        await uow.session.execute(
            text("update tenants set name = 'Renamed' where id = :id"), {"id": a}
        )
        await audit.append(**event(action="x" * 101))  # longer than the column takes
        with pytest.raises(asyncpg.StringDataRightTruncationError):
            await uow.commit()
    assert await database_owner.fetchval("select name from tenants where id = $1", a) != "Renamed"
    assert await database_owner.fetchval("select count(*) from audit_events") == 0
    # The connection went back to the pool with its transaction ended: the next one works.
    async with units(a) as (uow, audit):
        await audit.append(**event())
        await uow.commit()
    assert await database_owner.fetchval("select count(*) from audit_events") == 1


async def test_a_trail_switched_off_appends_nothing(
    settings: Settings, tenants: tuple[uuid.UUID, uuid.UUID], database_owner: asyncpg.Connection
) -> None:
    a, _ = tenants
    container = bootstrap.Container(msgspec.structs.replace(settings, audit_trail=False))
    try:
        async with container.unit_of_work() as uow:
            await uow.repository(AuditRepository, a).append(**event())
            await uow.commit()
    finally:
        await container.alchemy.get_engine().dispose()
    assert await database_owner.fetchval("select count(*) from audit_events") == 0


async def test_the_app_cannot_update_or_delete_an_event(
    units: Units, tenants: tuple[uuid.UUID, uuid.UUID], database_owner: asyncpg.Connection
) -> None:
    a, _ = tenants
    async with units(a) as (uow, audit):
        added = await audit.add(**event())
        await uow.commit()
    for change in (
        lambda audit: audit.update(added.id, {"action": "project.renamed"}),
        lambda audit: audit.delete(added.id),
    ):
        async with units(a) as (_, audit):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await change(audit)
    row = await database_owner.fetchrow("select action from audit_events where id = $1", added.id)
    assert row["action"] == "project.created"


async def test_the_purge_removes_the_tenants_old_events_in_batches(
    units: Units, tenants: tuple[uuid.UUID, uuid.UUID], database_owner: asyncpg.Connection
) -> None:
    a, b = tenants
    now = datetime.now(UTC)
    cutoff = now - 30 * DAY
    kept: dict[uuid.UUID, set[uuid.UUID]] = {}
    for tenant in (a, b):
        async with units(tenant) as (uow, audit):
            old = [await audit.add(**event(created_at=cutoff - i * DAY)) for i in range(1, 4)]
            new = [await audit.add(**event(created_at=cutoff + i * DAY)) for i in (0, 1)]
            await uow.commit()
        kept[tenant] = {e.id for e in (old if tenant == b else []) + new}

    purged = []
    async with units(a) as (uow, audit):
        assert isinstance(audit, SqlAuditRepository)
        while count := await audit.purge(cutoff, batch=2):
            purged.append(count)
        # The function set the tenant for itself alone: the transaction is still A's.
        assert await uow.session.scalar(text("select current_setting('app.tenant_id')")) == str(a)
        assert len(await audit.page(AuditQuery())) == 2
        await uow.commit()
    assert purged == [2, 1]

    rows = await database_owner.fetch("select tenant_id, id from audit_events")
    found: dict[uuid.UUID, set[uuid.UUID]] = {a: set(), b: set()}
    for row in rows:
        found[row["tenant_id"]].add(row["id"])
    assert found == kept


async def test_the_purge_use_case_removes_every_tenants_aged_events_as_the_app_role(
    units: Units, tenants: tuple[uuid.UUID, uuid.UUID], database_owner: asyncpg.Connection
) -> None:
    now = datetime.now(UTC)
    kept: set[uuid.UUID] = set()
    for tenant in tenants:
        async with units(tenant) as (uow, audit):
            for days in (400, 40, 31):
                await audit.add(**event(created_at=now - days * DAY))
            for age in (29 * DAY, 2 * DAY, timedelta(0)):
                kept.add((await audit.add(**event(created_at=now - age))).id)
            await uow.commit()

    async with units(tenants[0]) as (uow, _):
        purge = PurgeAuditEvents(uow, SystemClock())
        assert await purge(retention=30 * DAY, batch=2) == 6
        assert await purge(retention=30 * DAY, batch=2) == 0

    rows = await database_owner.fetch("select id from audit_events")
    assert {row["id"] for row in rows} == kept


async def test_the_database_refuses_to_purge_the_last_day(
    units: Units, tenants: tuple[uuid.UUID, uuid.UUID], database_owner: asyncpg.Connection
) -> None:
    a, _ = tenants
    now = datetime.now(UTC)
    async with units(a) as (uow, audit):
        for age in (2 * DAY, timedelta(hours=1)):
            await audit.add(**event(created_at=now - age))
        await uow.commit()

    # A cutoff inside the last day, however it is asked for: refused, nothing removed.
    for cutoff in (now - timedelta(hours=23), now, now + 365 * DAY):
        async with units(a) as (_, audit):
            with pytest.raises(DBAPIError, match=r"cutoff .* is less than one day ago") as error:
                await audit.purge(cutoff, batch=100)
            assert isinstance(error.value.orig.__cause__, asyncpg.InsufficientPrivilegeError)
    async with units(a) as (uow, _):
        with pytest.raises(DBAPIError, match="less than one day ago"):
            await PurgeAuditEvents(uow, SystemClock())(retention=timedelta(hours=1))
    assert await database_owner.fetchval("select count(*) from audit_events") == 2

    # The shortest retention the setting allows is still the database's to grant.
    async with units(a) as (uow, _):
        assert await PurgeAuditEvents(uow, SystemClock())(retention=DAY) == 1
    assert await database_owner.fetchval("select count(*) from audit_events") == 1


async def test_every_worker_schedules_the_purge_daily_and_one_runs_it(
    settings: Settings, tenants: tuple[uuid.UUID, uuid.UUID], database_owner: asyncpg.Connection
) -> None:
    for tenant in tenants:
        await database_owner.execute(
            "insert into audit_events (id, tenant_id, actor_type, action, target_type, "
            "created_at, updated_at) values (gen_random_uuid(), $1, 'system', 'project.deleted', "
            "'project', now() - interval '366 days', now())",
            tenant,
        )
    container = bootstrap.Container(settings)
    try:
        worker = container.worker(handle_signals=False)
        [job] = [job for job in worker.cron_jobs if job.coroutine is audit_retention]
        # Once a day, by one worker of however many (arq's unique job per run time).
        assert (job.hour, job.minute, job.second, job.unique) == ({3}, {47}, {0}, True)
        await worker.close()
        await audit_retention({"purge_audit": container.purge_audit_events})
    finally:
        await container.close()
        await container.alchemy.get_engine().dispose()
    assert await database_owner.fetchval("select count(*) from audit_events") == 0

from __future__ import annotations

from datetime import timedelta
from uuid import UUID, uuid4

import pytest

from tenantry.application.audit import (
    ORIGIN,
    ListAuditEvents,
    ListTenantAuditEvents,
    Origin,
    PurgeAuditEvents,
    changed,
    record,
)
from tenantry.application.documents import CreateDocument, DeleteDocument, UpdateDocument
from tenantry.application.projects import CreateProject, DeleteProject, UpdateProject
from tenantry.domain.audit import AuditEvent, AuditQuery
from tenantry.domain.auth import Actor
from tenantry.domain.errors import Forbidden, NotFound, StaleVersion
from tenantry.domain.tenants import NewTenant
from tenantry.domain.users import Role

from .fakes import FakeClock, FakeStore, FakeUnitOfWork, World

TENANT = uuid4()
OWNER = Actor(user_id=uuid4(), tenant_id=TENANT, roles=(Role.OWNER,))
MEMBER = Actor(user_id=uuid4(), tenant_id=TENANT, roles=(Role.MEMBER,))
KEY = Actor(user_id=uuid4(), tenant_id=TENANT, roles=(Role.ADMIN,), api_key_id=uuid4())
OTHER_OWNER = Actor(user_id=uuid4(), tenant_id=uuid4(), roles=(Role.OWNER,))


async def trail(world: World, actor: Actor = OWNER, **query: object) -> list[tuple[str, ...]]:
    events = await ListAuditEvents(world.uow)(actor, AuditQuery(**query))  # type: ignore[arg-type]
    return [(e.action, e.actor_type, str(e.target_id)) for e in events]


async def test_each_change_of_a_project_and_its_documents_is_one_event_newest_first() -> None:
    world = World()
    token = ORIGIN.set(Origin(request_id="req-1", client="203.0.113.9"))
    try:
        project = await CreateProject(world.uow)(MEMBER, name="Apollo", description="moon")
    finally:
        ORIGIN.reset(token)
    await UpdateProject(world.uow)(
        KEY, project.id, expected_version=1, name="Artemis", description="mars"
    )
    document = await CreateDocument(world.uow)(MEMBER, project.id, title="Plan", content="x")
    await UpdateDocument(world.uow)(
        MEMBER, project.id, document.id, expected_version=1, content="secret plans"
    )
    await DeleteDocument(world.uow, world.clock)(MEMBER, project.id, document.id)
    await DeleteProject(world.uow, world.clock)(OWNER, project.id)

    assert await trail(world) == [
        ("project.deleted", "user", str(project.id)),
        ("document.deleted", "user", str(document.id)),
        ("document.updated", "user", str(document.id)),
        ("document.created", "user", str(document.id)),
        ("project.updated", "api_key", str(project.id)),
        ("project.created", "user", str(project.id)),
    ]
    events = await ListAuditEvents(world.uow)(OWNER, AuditQuery())
    created, updated, document_updated = events[-1], events[-2], events[2]
    assert (created.request_id, created.client, created.actor_id) == (
        "req-1",
        "203.0.113.9",
        MEMBER.user_id,
    )
    assert created.changes == {"after": {"name": "Apollo"}}
    # The name with its values; the description, a body, by name only.
    assert updated.changes == {
        "before": {"name": "Apollo"},
        "after": {"name": "Artemis"},
        "changed": ["description"],
    }
    assert updated.api_key_id == KEY.api_key_id
    assert document_updated.changes == {"before": {}, "after": {}, "changed": ["content"]}
    assert "secret plans" not in repr(events)
    # Another tenant's owner sees none of it.
    assert await trail(world, OTHER_OWNER) == []


async def test_a_change_that_fails_leaves_no_event() -> None:
    world = World()
    project = await CreateProject(world.uow)(OWNER, name="Apollo")
    with pytest.raises(StaleVersion):
        await UpdateProject(world.uow)(OWNER, project.id, expected_version=7, name="Gemini")
    with pytest.raises(Forbidden):
        await DeleteProject(world.uow, world.clock)(MEMBER, project.id)
    assert await trail(world) == [("project.created", "user", str(project.id))]


async def test_only_owners_and_admins_read_the_trail() -> None:
    with pytest.raises(Forbidden):
        await ListAuditEvents(World().uow)(MEMBER, AuditQuery())


async def test_pages_follow_the_cursor_and_filters_narrow() -> None:
    world = World()
    projects = [await CreateProject(world.uow)(OWNER, name=f"P{i}") for i in range(5)]
    await DeleteProject(world.uow, world.clock)(OWNER, projects[0].id)
    first = await ListAuditEvents(world.uow)(OWNER, AuditQuery(limit=4))
    rest = await ListAuditEvents(world.uow)(OWNER, AuditQuery(limit=4, before=first[-1].id))
    assert len(first) == 4
    assert len(rest) == 2
    assert [e.id for e in first + rest] == sorted((e.id for e in first + rest), reverse=True)
    assert await trail(world, action="project.deleted") == [
        ("project.deleted", "user", str(projects[0].id))
    ]
    assert len(await trail(world, target_id=projects[0].id)) == 2
    assert len(await trail(world, actor_id=MEMBER.user_id)) == 0


def test_changed_shows_values_of_shown_fields_and_names_of_hidden_ones() -> None:
    assert changed(
        Origin(request_id="a", client="x"),
        Origin(request_id="b", client="y"),
        shown=["request_id"],
        hidden=["client"],
    ) == {"before": {"request_id": "a"}, "after": {"request_id": "b"}, "changed": ["client"]}


async def tenants_with_events(world: World, count: int, *, old: int, recent: int) -> list[UUID]:
    """``count`` tenants, each with ``old`` events 40 days old and ``recent`` ones of today."""
    async with world.uow:
        tenants = [
            (await world.uow.tenants.add(NewTenant.create(name=f"T{i}", slug=f"tenant-{i}"))).id
            for i in range(count)
        ]
        await world.uow.commit()
    for count_of_each, days_later in ((old, 40), (recent, 0)):
        async with world.uow:
            for tenant in tenants:
                for _ in range(count_of_each):
                    target = ("project", uuid4())
                    await record(world.uow, None, "project.deleted", target, tenant_id=tenant)
            await world.uow.commit()
        world.clock.advance(days=days_later)
    return tenants


def ages(world: World) -> dict[UUID, list[timedelta]]:
    """The age of every committed event, by tenant."""
    found: dict[UUID, list[timedelta]] = {}
    for event in world.uow.committed.rows_of(AuditEvent).values():
        found.setdefault(event.tenant_id, []).append(world.clock.now() - event.created_at)
    return found


async def test_the_purge_removes_every_tenants_old_events_a_batch_per_transaction() -> None:
    world = World()
    # More tenants than a page of them: the purge walks every page.
    tenants = await tenants_with_events(world, 3, old=5, recent=2)
    commits = world.uow.commits

    purged = await PurgeAuditEvents(world.uow, world.clock)(retention=timedelta(days=30), batch=2)

    assert purged == 15
    # 2, 2 and 1 of each tenant: three short transactions each.
    assert world.uow.commits - commits == 9
    assert ages(world) == {tenant: [timedelta(0)] * 2 for tenant in tenants}
    # Nothing older is left: the next run has nothing to do.
    assert await PurgeAuditEvents(world.uow, world.clock)(retention=timedelta(days=30)) == 0


async def test_the_purge_keeps_events_younger_than_the_retention() -> None:
    world = World()
    [tenant] = await tenants_with_events(world, 1, old=3, recent=1)
    assert await PurgeAuditEvents(world.uow, world.clock)(retention=timedelta(days=41)) == 0
    assert len(ages(world)[tenant]) == 4


class DiesAtCommit(FakeUnitOfWork):
    """A worker killed during its ``fatal``-th commit: what it committed before stays."""

    def __init__(self, store: FakeStore, clock: FakeClock, fatal: int) -> None:
        super().__init__(store, clock)
        self.fatal = fatal

    async def commit(self) -> None:
        if self.commits + 1 == self.fatal:
            raise RuntimeError("killed")
        await super().commit()


async def test_a_purge_cut_short_loses_nothing_and_the_next_run_goes_on() -> None:
    world = World()
    tenants = await tenants_with_events(world, 2, old=3, recent=1)
    dying = DiesAtCommit(world.uow.committed, world.clock, fatal=3)
    with pytest.raises(RuntimeError, match="killed"):
        await PurgeAuditEvents(dying, world.clock)(retention=timedelta(days=30), batch=2)
    # The first tenant's two batches (2, then 1) were committed; the rest was untouched.
    survivors = {tenant: len(found) for tenant, found in ages(World(uow=dying)).items()}
    assert survivors == {tenants[0]: 1, tenants[1]: 4}

    after = FakeUnitOfWork(dying.committed, world.clock)
    assert await PurgeAuditEvents(after, world.clock)(retention=timedelta(days=30), batch=2) == 3
    left = {tenant: len(found) for tenant, found in ages(World(uow=after)).items()}
    assert left == dict.fromkeys(tenants, 1)


async def test_only_superusers_read_another_tenants_trail() -> None:
    world = World()
    project = await CreateProject(world.uow)(OWNER, name="Apollo")
    superuser = Actor(user_id=uuid4(), tenant_id=uuid4(), roles=(Role.SUPERUSER,))
    async with world.uow:
        tenant = await world.uow.tenants.add(NewTenant.create(name="Acme", slug="acme"))
        await world.uow.commit()
    await CreateProject(world.uow)(
        Actor(user_id=uuid4(), tenant_id=tenant.id, roles=(Role.OWNER,)), name="Gemini"
    )
    list_any = ListTenantAuditEvents(world.uow)
    [event] = await list_any(superuser, tenant.id, AuditQuery())
    assert (event.tenant_id, event.action) == (tenant.id, "project.created")
    assert event.target_id != project.id
    with pytest.raises(Forbidden):
        await list_any(OWNER, tenant.id, AuditQuery())
    with pytest.raises(NotFound):
        await list_any(superuser, uuid4(), AuditQuery())

from __future__ import annotations

from uuid import uuid4

import pytest

from tenantry.application.audit import ORIGIN, ListAuditEvents, Origin, changed
from tenantry.application.documents import CreateDocument, DeleteDocument, UpdateDocument
from tenantry.application.projects import CreateProject, DeleteProject, UpdateProject
from tenantry.domain.audit import AuditQuery
from tenantry.domain.auth import Actor
from tenantry.domain.errors import Forbidden, StaleVersion
from tenantry.domain.users import Role

from .fakes import World

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

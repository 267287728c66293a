from __future__ import annotations

from uuid import uuid4

import pytest

from tenantry.application.documents import (
    CreateDocument,
    DeleteDocument,
    GetDocument,
    ListDocuments,
    UpdateDocument,
)
from tenantry.application.projects import (
    CreateProject,
    DeleteProject,
    GetProject,
    ListProjects,
    UpdateProject,
)
from tenantry.domain.auth import Actor
from tenantry.domain.errors import Forbidden, Invalid, NotFound, StaleVersion
from tenantry.domain.repository import ListQuery
from tenantry.domain.users import Role

from .fakes import World

TENANT = uuid4()
OWNER = Actor(user_id=uuid4(), tenant_id=TENANT, roles=(Role.OWNER,))
MEMBER = Actor(user_id=uuid4(), tenant_id=TENANT, roles=(Role.MEMBER,))
STRANGER = Actor(user_id=uuid4(), tenant_id=uuid4(), roles=(Role.OWNER,))


async def test_create_and_read_a_project() -> None:
    world = World()
    project = await CreateProject(world.uow)(MEMBER, name="  Apollo   11 ", description="moon")
    assert project.name == "Apollo 11"
    assert project.owner_id == MEMBER.user_id
    assert (await GetProject(world.uow)(OWNER, project.id)).id == project.id
    with pytest.raises(NotFound):
        await GetProject(world.uow)(STRANGER, project.id)


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
async def test_bad_names_are_invalid(name: str) -> None:
    with pytest.raises(Invalid):
        await CreateProject(World().uow)(OWNER, name=name)


async def test_optimistic_concurrency() -> None:
    world = World()
    project = await CreateProject(world.uow)(OWNER, name="Apollo")
    update = UpdateProject(world.uow)
    changed = await update(OWNER, project.id, expected_version=1, name="Artemis")
    assert changed.version == 2
    with pytest.raises(StaleVersion):
        await update(OWNER, project.id, expected_version=1, name="Gemini")
    assert (await update(OWNER, project.id, expected_version=None, description="d")).version == 3
    with pytest.raises(NotFound):
        await update(STRANGER, project.id, expected_version=None, name="x")


async def test_only_managers_or_the_project_owner_delete() -> None:
    world = World()
    by_owner = await CreateProject(world.uow)(OWNER, name="Owner's")
    by_member = await CreateProject(world.uow)(MEMBER, name="Member's")
    with pytest.raises(Forbidden):
        await DeleteProject(world.uow, world.clock)(MEMBER, by_owner.id)
    await DeleteProject(world.uow, world.clock)(MEMBER, by_member.id)
    await DeleteProject(world.uow, world.clock)(OWNER, by_owner.id)
    projects, total = await ListProjects(world.uow)(OWNER, ListQuery())
    assert (projects, total) == ([], 0)


async def test_deleting_a_project_takes_its_documents() -> None:
    world = World()
    project = await CreateProject(world.uow)(OWNER, name="Apollo")
    document = await CreateDocument(world.uow)(OWNER, project.id, title="Plan", content="go")
    assert (await GetDocument(world.uow)(OWNER, project.id, document.id)).title == "Plan"
    await DeleteProject(world.uow, world.clock)(OWNER, project.id)
    with pytest.raises(NotFound):
        await GetDocument(world.uow)(OWNER, project.id, document.id)
    with pytest.raises(NotFound):
        await ListDocuments(world.uow)(OWNER, project.id, ListQuery())
    with pytest.raises(NotFound):
        await CreateDocument(world.uow)(OWNER, project.id, title="Late", content="")


async def test_documents_need_a_project_of_the_callers_tenant() -> None:
    world = World()
    project = await CreateProject(world.uow)(OWNER, name="Apollo")
    with pytest.raises(NotFound):
        await CreateDocument(world.uow)(STRANGER, project.id, title="t", content="c")
    document = await CreateDocument(world.uow)(
        OWNER, project.id, title="t", content="c", metadata={"k": 1}
    )
    for action in (
        GetDocument(world.uow)(STRANGER, project.id, document.id),
        UpdateDocument(world.uow)(
            STRANGER, project.id, document.id, expected_version=None, title="x"
        ),
        DeleteDocument(world.uow, world.clock)(STRANGER, project.id, document.id),
        GetDocument(world.uow)(OWNER, uuid4(), document.id),
    ):
        with pytest.raises(NotFound):
            await action


async def test_document_rules() -> None:
    world = World()
    project = await CreateProject(world.uow)(OWNER, name="Apollo")
    create = CreateDocument(world.uow)
    with pytest.raises(Invalid):
        await create(OWNER, project.id, title="", content="")
    with pytest.raises(Invalid):
        await create(
            OWNER, project.id, title="t", content="", metadata={str(i): i for i in range(101)}
        )
    document = await create(OWNER, project.id, title="t", content="c")
    with pytest.raises(StaleVersion):
        await UpdateDocument(world.uow)(
            OWNER, project.id, document.id, expected_version=5, content="x"
        )
    updated = await UpdateDocument(world.uow)(
        OWNER, project.id, document.id, expected_version=1, content="x"
    )
    assert (updated.content, updated.version) == ("x", 2)

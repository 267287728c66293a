"""The ownership rule, alone and in every use case that destroys something: the creator, the
tenant's admins and owners and platform superusers may; other members may not; a row with no
creator is the managers' alone; another tenant's id is "not found" before anything else."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from uuid import UUID, uuid4

import msgspec
import pytest

from tenantry.application.documents import CreateDocument, DeleteDocument, GetDocument
from tenantry.application.files import DeleteFile, Files, GetFile, UploadFile
from tenantry.application.ownership import SYSTEM_USER, creator, may_destroy, require_may_destroy
from tenantry.application.projects import CreateProject, DeleteProject, GetProject
from tenantry.application.tasks import CancelTask, GetTask, Registry, SubmitTask
from tenantry.application.tasks.handlers.noop import Noop
from tenantry.application.tasks.handlers.project_export import ProjectExport
from tenantry.application.tasks.runner import RunTask
from tenantry.domain.auth import Actor
from tenantry.domain.errors import Forbidden, NotFound
from tenantry.domain.files import TEXT, FilePolicy
from tenantry.domain.tasks import TaskLimits, TaskStatus
from tenantry.domain.tenants import Tenant, TenantStatus
from tenantry.domain.users import Role

from .fakes import FakeJobQueue, FakeStorage, FakeUnitOfWork, World

TENANT = uuid4()
MIA = Actor(user_id=uuid4(), tenant_id=TENANT, roles=(Role.MEMBER,))
NOAH = Actor(user_id=uuid4(), tenant_id=TENANT, roles=(Role.MEMBER,))
ADMIN = Actor(user_id=uuid4(), tenant_id=TENANT, roles=(Role.ADMIN,))
OWNER = Actor(user_id=uuid4(), tenant_id=TENANT, roles=(Role.OWNER,))
ROOT = Actor(user_id=uuid4(), tenant_id=TENANT, roles=(Role.SUPERUSER,))
STRANGER = Actor(user_id=uuid4(), tenant_id=uuid4(), roles=(Role.OWNER,))
POLICY = FilePolicy(max_bytes=10_000, quota_bytes=10**9, allowed_types=frozenset({TEXT}))

KINDS = ("project", "document", "file", "task")
# (who asks, may they destroy what MIA created)
CALLERS = [
    pytest.param(MIA, True, id="member-creator"),
    pytest.param(NOAH, False, id="member-other"),
    pytest.param(ADMIN, True, id="admin"),
    pytest.param(OWNER, True, id="owner"),
    pytest.param(ROOT, True, id="superuser"),
]
# The same callers on a row with no creator: only the managers.
CALLERS_WITHOUT_CREATOR = [
    pytest.param(MIA, False, id="member-former-creator"),
    pytest.param(NOAH, False, id="member-other"),
    pytest.param(ADMIN, True, id="admin"),
    pytest.param(OWNER, True, id="owner"),
    pytest.param(ROOT, True, id="superuser"),
]


@pytest.mark.parametrize(("actor", "allowed"), CALLERS)
def test_the_rule_on_a_row_mia_created(actor: Actor, allowed: bool) -> None:
    assert may_destroy(actor, MIA.user_id) is allowed
    if allowed:
        require_may_destroy(actor, MIA.user_id, "this file")
    else:
        with pytest.raises(Forbidden, match="this file"):
            require_may_destroy(actor, MIA.user_id, "this file")


@pytest.mark.parametrize(("actor", "allowed"), CALLERS_WITHOUT_CREATOR)
def test_the_rule_on_a_row_without_creator(actor: Actor, allowed: bool) -> None:
    assert may_destroy(actor, None) is allowed


def test_the_system_records_no_creator() -> None:
    assert creator(MIA) == MIA.user_id
    system = Actor(user_id=SYSTEM_USER, tenant_id=TENANT, roles=())
    assert creator(system) is None
    # Nor does the system's id make anyone the creator of a row without one.
    assert not may_destroy(system, None)


class Case:
    """One owned kind: create it as an actor, destroy it, and tell whether it still stands."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.world = World()
        self.files = Files(
            self.world.uow, storage=FakeStorage(), clock=self.world.clock, policy=POLICY
        )
        self.project_id = uuid4()
        self.id = uuid4()

    async def create(self, actor: Actor) -> UUID | None:
        """Create one as ``actor``; returns the creator it recorded."""
        uow = self.world.uow
        project = await CreateProject(uow)(actor, name="Apollo")
        self.project_id = self.id = project.id
        if self.kind == "project":
            return project.owner_id
        if self.kind == "document":
            document = await CreateDocument(uow)(actor, project.id, title="Plan", content="go")
            self.id = document.id
            return document.created_by
        if self.kind == "file":
            stored = await UploadFile(self.files)(
                actor, filename="a.txt", claimed_type=None, chunks=one_chunk(b"hello")
            )
            self.id = stored.id
            return stored.created_by
        task = await SubmitTask(uow, FakeJobQueue(), Registry([Noop()]), TaskLimits())(
            actor, task_type="noop", config={}, input_files=[], request_id=None
        )
        self.id = task.id
        return task.created_by

    def forget_creator(self) -> None:
        """What deleting the creator's user does to the row (ON DELETE SET NULL)."""
        store = self.world.uow.committed
        if self.kind == "project":
            store.projects[self.id] = msgspec.structs.replace(
                store.projects[self.id], owner_id=None
            )
        elif self.kind == "document":
            store.documents[self.id] = msgspec.structs.replace(
                store.documents[self.id], created_by=None
            )
        elif self.kind == "file":
            store.files[self.id] = msgspec.structs.replace(store.files[self.id], created_by=None)
        else:
            store.tasks[self.id] = msgspec.structs.replace(store.tasks[self.id], created_by=None)

    def destroy(self, actor: Actor) -> Awaitable[object]:
        uow, clock = self.world.uow, self.world.clock
        if self.kind == "project":
            return DeleteProject(uow, clock)(actor, self.id)
        if self.kind == "document":
            return DeleteDocument(uow, clock)(actor, self.project_id, self.id)
        if self.kind == "file":
            return DeleteFile(self.files)(actor, self.id)
        return CancelTask(uow, clock)(actor, self.id)

    async def stands(self) -> bool:
        uow = self.world.uow
        reads: dict[str, Callable[[], Awaitable[object]]] = {
            "project": lambda: GetProject(uow)(OWNER, self.id),
            "document": lambda: GetDocument(uow)(OWNER, self.project_id, self.id),
            "file": lambda: GetFile(self.files)(OWNER, self.id),
        }
        if self.kind == "task":
            return (await GetTask(uow)(OWNER, self.id)).status != TaskStatus.CANCELLED
        try:
            await reads[self.kind]()
        except NotFound:
            return False
        return True


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def destroys_only_if_allowed(case: Case, actor: Actor, allowed: bool) -> None:
    """The row goes when ``actor`` may destroy it; otherwise Forbidden, and it stays."""
    if allowed:
        await case.destroy(actor)
        assert not await case.stands()
    else:
        with pytest.raises(Forbidden):
            await case.destroy(actor)
        assert await case.stands()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("actor", "allowed"), CALLERS)
async def test_destroying_what_a_member_created(kind: str, actor: Actor, allowed: bool) -> None:
    case = Case(kind)
    assert await case.create(MIA) == MIA.user_id
    await destroys_only_if_allowed(case, actor, allowed)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("actor", "allowed"), CALLERS_WITHOUT_CREATOR)
async def test_a_row_without_creator_is_for_managers(
    kind: str, actor: Actor, allowed: bool
) -> None:
    case = Case(kind)
    await case.create(MIA)
    case.forget_creator()
    await destroys_only_if_allowed(case, actor, allowed)


@pytest.mark.parametrize("kind", KINDS)
async def test_another_tenants_row_is_not_found_not_forbidden(kind: str) -> None:
    case = Case(kind)
    await case.create(MIA)
    with pytest.raises(NotFound):
        await case.destroy(STRANGER)
    assert await case.stands()


@pytest.mark.parametrize("submitter_gone", [False, True])
async def test_an_exports_file_belongs_to_the_tasks_submitter(submitter_gone: bool) -> None:
    world, storage = World(), FakeStorage()
    now = world.clock.now()
    world.uow.committed.tenants[TENANT] = Tenant(
        id=TENANT,
        name="Acme",
        slug="acme",
        status=TenantStatus.ACTIVE,
        settings={},
        created_at=now,
        updated_at=now,
    )
    project = await CreateProject(world.uow)(MIA, name="Apollo")
    registry = Registry([ProjectExport()])
    task = await SubmitTask(world.uow, FakeJobQueue(), registry, TaskLimits())(
        MIA,
        task_type="project.export",
        config={"project_id": str(project.id)},
        input_files=[],
        request_id=None,
    )
    if submitter_gone:
        store = world.uow.committed
        store.tasks[task.id] = msgspec.structs.replace(store.tasks[task.id], created_by=None)

    @asynccontextmanager
    async def units() -> AsyncIterator[FakeUnitOfWork]:
        async with world.uow as uow:
            yield uow

    run = RunTask(
        units=units,
        registry=registry,
        storage=storage,
        clock=world.clock,
        file_policy=POLICY,
        max_attempts=1,
        backoff=timedelta(seconds=1),
        heartbeat=timedelta(seconds=60),
    )
    await run(TENANT, task.id)
    done = world.uow.committed.tasks[task.id]
    assert done.status == TaskStatus.COMPLETED, done.error_message
    [output] = done.output_files
    exported = world.uow.committed.files[output]
    assert exported.created_by == (None if submitter_gone else MIA.user_id)

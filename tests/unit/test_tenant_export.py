"""The export's request: owners only, its task and its event committed together, enqueued
after; the task type refused by the generic submit; what looks secret."""

from __future__ import annotations

from uuid import uuid4

import pytest

from tenantry.application.tasks import Registry, SubmitTask
from tenantry.application.tasks.handlers.tenant_export import TenantExport
from tenantry.application.tenant_export import RequestTenantExport
from tenantry.domain.auth import Actor
from tenantry.domain.errors import Forbidden, Invalid
from tenantry.domain.tasks import TaskLimits
from tenantry.domain.tenant_export import looks_secret
from tenantry.domain.users import Role

from .fakes import FakeJobQueue, World
from .test_tasks import ACTOR, tenant_of

TENANT = ACTOR.tenant_id


def actor(*roles: Role) -> Actor:
    return Actor(user_id=uuid4(), tenant_id=TENANT, roles=roles)


async def test_an_owner_starts_the_export_and_its_request_is_on_the_trail() -> None:
    world, queue = World(), FakeJobQueue()
    tenant_of(world)
    owner = actor(Role.OWNER)
    task = await RequestTenantExport(world.uow, queue, Registry([TenantExport()]), TaskLimits())(
        owner, request_id="r1"
    )
    assert (task.type, task.created_by) == ("tenant.export", owner.user_id)
    assert world.uow.committed.tasks[task.id].config == {}
    assert queue.enqueued == [task.id]
    events = [(e.action, e.target_type, e.target_id) for e in world.events(TENANT)]
    assert events == [
        ("task.submitted", "task", task.id),
        ("tenant.export_requested", "tenant", TENANT),
    ]


async def test_anyone_but_an_owner_is_refused_and_nothing_is_written() -> None:
    world, queue = World(), FakeJobQueue()
    tenant_of(world)
    for roles in ((Role.ADMIN,), (Role.MEMBER,), (Role.SUPERUSER,), ()):
        with pytest.raises(Forbidden):
            await RequestTenantExport(world.uow, queue, Registry([TenantExport()]), TaskLimits())(
                actor(*roles), request_id=None
            )
    assert (world.uow.committed.tasks, queue.enqueued, world.events(TENANT)) == ({}, [], [])


async def test_the_generic_submit_refuses_it_naming_its_endpoint() -> None:
    world, queue = World(), FakeJobQueue()
    tenant_of(world)
    with pytest.raises(Invalid) as refused:
        await SubmitTask(world.uow, queue, Registry([TenantExport()]), TaskLimits())(
            actor(Role.OWNER),
            task_type="tenant.export",
            config={},
            input_files=[],
            request_id=None,
        )
    assert refused.value.fields == {"type": "use POST /api/v1/tenant/export"}
    assert world.uow.committed.tasks == {}


@pytest.mark.parametrize(
    ("column", "secret"),
    [
        ("password_hash", True),
        ("key_hash", True),
        ("token_hash", True),
        ("client_secret", True),
        ("totp_seed", True),
        ("private_key", True),
        ("Salt", True),
        ("email", False),
        ("prefix", False),
        ("sha256", False),
        ("family_id", False),
    ],
)
def test_what_looks_secret(column: str, secret: bool) -> None:
    assert looks_secret(column) is secret

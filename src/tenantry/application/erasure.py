"""Tenant erasure: asked for by the tenant's owner or a platform superuser, carried out by a
worker, resumed by a sweep (or an operator) when a worker died on it.

The request does at once, in its one transaction, what must not wait: the tenant is suspended
(its tokens and API keys stop working with the next request), its queued tasks are cancelled
and its running ones asked to stop, and the platform's erasure log gets the entry of who asked
and when. The job is enqueued after that commits. The worker then removes the tenant's rows,
table by table (children first), ``batch`` rows per short transaction that also counts them
in the log; then every object under the tenant's storage prefix; then the tenant's row. Every
step is idempotent: a run killed anywhere is finished by the next, which finds what is left.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from uuid import UUID

from tenantry.application.audit import ORIGIN
from tenantry.application.tasks import UnitOfWorkFactory
from tenantry.domain.auth import Actor
from tenantry.domain.erasure import (
    TENANT_ERASED,
    ErasureLog,
    ErasureQueue,
    Requester,
    TenantData,
    TenantErasure,
    check_erasable,
    tenant_prefix,
)
from tenantry.domain.errors import Forbidden, NotFound, found
from tenantry.domain.files import ObjectStorage
from tenantry.domain.ports import Clock, UnitOfWork
from tenantry.domain.tasks import TaskRepository, TaskStatus
from tenantry.domain.tenants import TenantStatus
from tenantry.domain.users import Role

# Objects removed between two counts in the log (each count is a short transaction).
OBJECTS_PER_COUNT = 100


async def request_erasure(
    uow: UnitOfWork,
    clock: Clock,
    tenant_id: UUID,
    confirm: str | None,
    *,
    requested_by: UUID | None,
    requester: Requester,
) -> TenantErasure:
    """Suspend the tenant, cancel its tasks and log the erasure, in ``uow``'s transaction;
    committed by the caller. An erasure already under way is answered again, not doubled."""
    tenant = found(await uow.tenants.get(tenant_id), "No such tenant.")
    check_erasable(tenant, confirm)
    log = uow.platform(ErasureLog)
    current = await log.unfinished(tenant.id)
    if current is not None:
        return current
    if tenant.status != TenantStatus.SUSPENDED:
        await uow.tenants.update(tenant.id, status=TenantStatus.SUSPENDED)
    # Queued tasks end now; running ones stop at their next cancellation check, which finds
    # the tenant no longer active.
    await uow.repository(TaskRepository, tenant.id).cancel_unfinished(
        clock.now(), error_message=TENANT_ERASED
    )
    return await log.add(
        tenant,
        requested_by=requested_by,
        requested_by_type=requester,
        request_id=ORIGIN.get().request_id,
    )


class EraseTenant:
    """A platform superuser erases any tenant but the platform's own."""

    def __init__(self, uow: UnitOfWork, clock: Clock, queue: ErasureQueue) -> None:
        self.uow = uow
        self.clock = clock
        self.queue = queue

    async def __call__(self, actor: Actor, tenant_id: UUID, confirm: str | None) -> TenantErasure:
        if not actor.is_superuser:
            raise Forbidden("Only platform superusers may do this.")
        async with self.uow:
            erasure = await request_erasure(
                self.uow,
                self.clock,
                tenant_id,
                confirm,
                requested_by=actor.user_id,
                requester=Requester.SUPERUSER,
            )
            await self.uow.commit()
        # After the commit: a rolled-back request runs no job; a lost enqueue is the sweep's.
        await self.queue.enqueue(erasure.id, request_id=erasure.request_id)
        return erasure


class EraseOwnTenant:
    """A tenant's owner erases their own tenant."""

    def __init__(self, uow: UnitOfWork, clock: Clock, queue: ErasureQueue) -> None:
        self.uow = uow
        self.clock = clock
        self.queue = queue

    async def __call__(self, actor: Actor, confirm: str | None) -> TenantErasure:
        if Role.OWNER not in actor.roles or actor.is_superuser:
            raise Forbidden("Only the tenant's owners may erase it.")
        async with self.uow:
            erasure = await request_erasure(
                self.uow,
                self.clock,
                actor.tenant_id,
                confirm,
                requested_by=actor.user_id,
                requester=Requester.OWNER,
            )
            await self.uow.commit()
        await self.queue.enqueue(erasure.id, request_id=erasure.request_id)
        return erasure


class EraseTenantAsOperator:
    """`tenantry tenants erase`: an operator at the CLI, whom the platform knows as no user;
    run to the end in the calling process (``RunErasure``)."""

    def __init__(self, uow: UnitOfWork, clock: Clock) -> None:
        self.uow = uow
        self.clock = clock

    async def __call__(self, slug: str, confirm: str | None) -> TenantErasure:
        async with self.uow:
            tenant = found(await self.uow.tenants.get_by_slug(slug), "No such tenant.")
            erasure = await request_erasure(
                self.uow,
                self.clock,
                tenant.id,
                confirm,
                requested_by=None,
                requester=Requester.OPERATOR,
            )
            await self.uow.commit()
        return erasure


class GetErasure:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, actor: Actor, erasure_id: UUID) -> TenantErasure:
        if not actor.is_superuser:
            raise Forbidden("Only platform superusers may do this.")
        async with self.uow:
            erasure = await self.uow.platform(ErasureLog).get(erasure_id)
        if erasure is None:
            raise NotFound("No such erasure.")
        return erasure


class ListErasures:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(
        self, actor: Actor, *, limit: int, offset: int
    ) -> tuple[list[TenantErasure], int]:
        if not actor.is_superuser:
            raise Forbidden("Only platform superusers may do this.")
        async with self.uow:
            return await self.uow.platform(ErasureLog).page(limit=limit, offset=offset)


class RunErasure:
    """Carry an erasure out, or on from where the last run stopped. Returns it as it ended
    (None when there is no such erasure); an erasure already finished is left as it is.

    ``settle`` is how long running tasks of the tenant are given to stop before the rows go
    (a task that never checks for cancellation may still write; what it writes after its
    tenant's row is gone is refused, and an object it stores is the orphan sweep's).
    """

    def __init__(
        self,
        *,
        units: UnitOfWorkFactory,
        storage: ObjectStorage,
        clock: Clock,
        batch: int = 1000,
        settle: timedelta = timedelta(0),
        poll: timedelta = timedelta(seconds=1),
    ) -> None:
        self.units = units
        self.storage = storage
        self.clock = clock
        self.batch = batch
        self.settle = settle
        self.poll = poll

    async def __call__(self, erasure_id: UUID) -> TenantErasure | None:
        async with self.units() as uow:
            erasure = await uow.platform(ErasureLog).start(erasure_id, self.clock.now())
            await uow.commit()
        if erasure is None:
            async with self.units() as uow:
                return await uow.platform(ErasureLog).get(erasure_id)
        tenant_id = erasure.tenant_id
        await self._settle(tenant_id)
        await self._rows(erasure_id, tenant_id)
        await self._objects(erasure_id, tenant_id)
        async with self.units() as uow:
            await uow.repository(TenantData, tenant_id).remove_tenant()
            finished = await uow.platform(ErasureLog).finish(erasure_id, self.clock.now())
            await uow.commit()
        if finished is not None:
            return finished
        async with self.units() as uow:
            return await uow.platform(ErasureLog).get(erasure_id)

    async def _settle(self, tenant_id: UUID) -> None:
        deadline = self.clock.now() + self.settle
        while self.clock.now() < deadline:
            async with self.units() as uow:
                tasks = uow.repository(TaskRepository, tenant_id)
                running = await tasks.count(status=TaskStatus.PROCESSING)
            if not running:
                return
            await asyncio.sleep(self.poll.total_seconds())

    async def _rows(self, erasure_id: UUID, tenant_id: UUID) -> None:
        async with self.units() as uow:
            tables = await uow.repository(TenantData, tenant_id).tables()
        for table in tables:
            while True:
                async with self.units() as uow:
                    removed = await uow.repository(TenantData, tenant_id).delete_batch(
                        table, self.batch
                    )
                    await uow.platform(ErasureLog).count(
                        erasure_id, self.clock.now(), table=table.name, removed=removed
                    )
                    await uow.commit()
                if removed < self.batch:
                    break

    async def _objects(self, erasure_id: UUID, tenant_id: UUID) -> None:
        removed = 0
        async for key, _ in self.storage.objects(tenant_prefix(tenant_id)):
            await self.storage.delete(key)
            removed += 1
            if removed == OBJECTS_PER_COUNT:
                await self._count_objects(erasure_id, removed)
                removed = 0
        await self._count_objects(erasure_id, removed)

    async def _count_objects(self, erasure_id: UUID, removed: int) -> None:
        async with self.units() as uow:
            await uow.platform(ErasureLog).count(erasure_id, self.clock.now(), removed=removed)
            await uow.commit()


class ResumeErasures:
    """The sweep: unfinished erasures that nobody worked on for ``quiet`` (their worker died,
    their enqueue was lost) go back to the queue."""

    def __init__(
        self, *, units: UnitOfWorkFactory, queue: ErasureQueue, clock: Clock, quiet: timedelta
    ) -> None:
        self.units = units
        self.queue = queue
        self.clock = clock
        self.quiet = quiet

    async def __call__(self) -> list[TenantErasure]:
        async with self.units() as uow:
            stalled = await uow.platform(ErasureLog).stalled(self.clock.now() - self.quiet)
        for erasure in stalled:
            await self.queue.enqueue(erasure.id, request_id=erasure.request_id)
        return stalled


class FinishErasures:
    """`tenantry tenants erase --resume`: every unfinished erasure, run to its end in this
    process (an operator's, when no worker runs, or to see it done). One that a worker is on
    meanwhile is safe to run as well: each batch removes what is still there, and counts it."""

    def __init__(self, *, units: UnitOfWorkFactory, run: RunErasure, clock: Clock) -> None:
        self.units = units
        self.run = run
        self.clock = clock

    async def __call__(self) -> list[TenantErasure]:
        async with self.units() as uow:
            unfinished = await uow.platform(ErasureLog).stalled(self.clock.now())
        finished = []
        for erasure in unfinished:
            ended = await self.run(erasure.id)
            if ended is not None:
                finished.append(ended)
        return finished

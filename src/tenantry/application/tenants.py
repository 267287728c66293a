"""Tenants: created with their owner; suspended and configured by the platform."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec

from tenantry.application.auth import Identity
from tenantry.domain.auth import Actor
from tenantry.domain.errors import Conflict, Forbidden, found
from tenantry.domain.ports import Clock, UnitOfWork
from tenantry.domain.tasks import TENANT_SUSPENDED, TaskRepository
from tenantry.domain.tenants import PLATFORM_SLUG, NewTenant, Tenant, TenantStatus
from tenantry.domain.users import Role, User, UserRepository


class OwnerInput(msgspec.Struct, kw_only=True, frozen=True):
    username: str
    email: str
    password: str


class CreateTenant:
    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    async def __call__(
        self,
        *,
        name: str,
        slug: str,
        owner: OwnerInput,
        client: str | None,
        roles: tuple[Role, ...] = (Role.OWNER,),
        platform: bool = False,
    ) -> tuple[Tenant, User]:
        """The tenant and its first user, in one transaction.

        ``client`` is the caller's address, rate limited; None is a trusted operator (the CLI).
        """
        policy = self.identity.policy
        if client is not None:
            await self.identity.limit(
                f"register:address:{client}",
                limit=policy.register_attempts_per_address,
                window_seconds=policy.register_window_seconds,
            )
        new = NewTenant.create(name=name, slug=slug, platform=platform)
        uow = self.identity.uow
        async with uow:
            if await uow.tenants.get_by_slug(new.slug) is not None:
                raise Conflict(f"The slug {new.slug!r} is taken.", fields={"slug": "is taken"})
            tenant = await uow.tenants.add(new)
            user = await uow.repository(UserRepository, tenant.id).add(
                await self.identity.new_user(
                    tenant.id,
                    username=owner.username,
                    email=owner.email,
                    password=owner.password,
                    roles=roles,
                )
            )
            await uow.commit()
        return tenant, user


def require_superuser(actor: Actor) -> None:
    if not actor.is_superuser:
        raise Forbidden("Only platform superusers may do this.")


class ListTenants:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, actor: Actor, *, limit: int, offset: int) -> tuple[list[Tenant], int]:
        require_superuser(actor)
        async with self.uow:
            return await self.uow.tenants.list(limit=limit, offset=offset)


class UpdateTenant:
    def __init__(self, uow: UnitOfWork, clock: Clock) -> None:
        self.uow = uow
        self.clock = clock

    async def __call__(
        self,
        actor: Actor,
        tenant_id: UUID,
        *,
        status: TenantStatus | None = None,
        settings: dict[str, Any] | None = None,
    ) -> Tenant:
        require_superuser(actor)
        async with self.uow:
            current = found(await self.uow.tenants.get(tenant_id), "No such tenant.")
            if current.slug == PLATFORM_SLUG and status == TenantStatus.SUSPENDED:
                raise Forbidden("The platform tenant cannot be suspended.")
            merged = None if settings is None else {**current.settings, **settings}
            tenant = await self.uow.tenants.update(tenant_id, status=status, settings=merged)
            if status == TenantStatus.SUSPENDED and current.status != TenantStatus.SUSPENDED:
                # Queued work ends now, where the tenant's users see it, rather than when a
                # worker reaches it; running work stops at its next check. Re-activation
                # restarts nothing.
                await self.uow.repository(TaskRepository, tenant_id).cancel_unfinished(
                    self.clock.now(), error_message=TENANT_SUSPENDED
                )
            await self.uow.commit()
        assert tenant is not None
        return tenant


class CreateSuperuser:
    """A platform operator, in the platform's own tenant (made on first use)."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    async def __call__(self, *, username: str, email: str, password: str) -> User:
        uow = self.identity.uow
        async with uow:
            platform = await uow.tenants.get_by_slug(PLATFORM_SLUG)
            if platform is None:
                new = NewTenant.create(name="Platform", slug=PLATFORM_SLUG, platform=True)
                platform = await uow.tenants.add(new)
            user = await uow.repository(UserRepository, platform.id).add(
                await self.identity.new_user(
                    platform.id,
                    username=username,
                    email=email,
                    password=password,
                    roles=(Role.SUPERUSER, Role.OWNER),
                )
            )
            await uow.commit()
        return user

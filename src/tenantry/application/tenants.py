"""Tenants: created with their owner; suspended and configured by the platform."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec

from tenantry.application.audit import changed, record, snapshot
from tenantry.application.auth import USER_SHOWN, Identity
from tenantry.domain.auth import Actor
from tenantry.domain.errors import Conflict, Forbidden, found
from tenantry.domain.ports import Clock, UnitOfWork
from tenantry.domain.tasks import TASK_LIMITS_SETTING, TENANT_SUSPENDED, TaskLimits, TaskRepository
from tenantry.domain.tenants import PLATFORM_SLUG, NewTenant, Tenant, TenantStatus
from tenantry.domain.usage import LIMITS_SETTING, UsageLimits
from tenantry.domain.users import Role, User, UserRepository

# What the audit trail shows of a tenant: its name, slug and status with values; its settings
# by the names of those that changed (their values are the tenant's configuration).
TENANT_SHOWN = ("name", "slug", "status")


async def record_created(
    uow: UnitOfWork, actor: Actor | None, tenant: Tenant | None, user: User
) -> None:
    """The events of a user made with (or into) a tenant outside the tenant's own use cases,
    and of the tenant itself when it is new: in that tenant's trail."""
    if tenant is not None:
        await record(
            uow,
            actor,
            "tenant.created",
            ("tenant", tenant.id),
            tenant_id=tenant.id,
            changes={"after": snapshot(tenant, TENANT_SHOWN)},
        )
    await record(
        uow,
        actor,
        "user.created",
        ("user", user.id),
        tenant_id=user.tenant_id,
        changes={"after": snapshot(user, USER_SHOWN)},
    )


def settings_changed(before: Tenant, after: Tenant) -> list[str]:
    """The names of the settings that changed, as ``changed`` names its hidden fields."""
    old, new = before.settings, after.settings
    return [f"settings.{k}" for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]


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
            # A sign-up is its owner's doing; the CLI's (no client) is an operator's, whom the
            # platform does not know as a user: the system.
            owner_actor = Actor(user_id=user.id, tenant_id=tenant.id, roles=user.roles)
            await record_created(uow, owner_actor if client is not None else None, tenant, user)
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
        if settings is not None and LIMITS_SETTING in settings:
            UsageLimits.of(settings[LIMITS_SETTING])  # 422 naming the field, before any write
        if settings is not None and TASK_LIMITS_SETTING in settings:
            TaskLimits.of(settings[TASK_LIMITS_SETTING])
        async with self.uow:
            current = found(await self.uow.tenants.get(tenant_id), "No such tenant.")
            if current.slug == PLATFORM_SLUG and status == TenantStatus.SUSPENDED:
                raise Forbidden("The platform tenant cannot be suspended.")
            if current.slug == PLATFORM_SLUG and settings and LIMITS_SETTING in settings:
                # Its superusers would lock themselves out of lifting them.
                raise Forbidden("The platform tenant has no usage limits.")
            merged = None if settings is None else {**current.settings, **settings}
            tenant = found(
                await self.uow.tenants.update(tenant_id, status=status, settings=merged),
                "No such tenant.",
            )
            if status == TenantStatus.SUSPENDED and current.status != TenantStatus.SUSPENDED:
                # Queued work ends now, where the tenant's users see it, rather than when a
                # worker reaches it; running work stops at its next check. Re-activation
                # restarts nothing.
                await self.uow.repository(TaskRepository, tenant_id).cancel_unfinished(
                    self.clock.now(), error_message=TENANT_SUSPENDED
                )
            changes = changed(current, tenant, shown=TENANT_SHOWN, hidden=())
            if names := settings_changed(current, tenant):
                changes["changed"] = names
            # In the changed tenant's trail, where its owners read it.
            await record(
                self.uow,
                actor,
                "tenant.updated",
                ("tenant", tenant_id),
                tenant_id=tenant_id,
                changes=changes,
            )
            await self.uow.commit()
        return tenant


class CreateSuperuser:
    """A platform operator, in the platform's own tenant (made on first use)."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    async def __call__(self, *, username: str, email: str, password: str) -> User:
        uow = self.identity.uow
        async with uow:
            platform = await uow.tenants.get_by_slug(PLATFORM_SLUG)
            made = None
            if platform is None:
                new = NewTenant.create(name="Platform", slug=PLATFORM_SLUG, platform=True)
                platform = made = await uow.tenants.add(new)
            user = await uow.repository(UserRepository, platform.id).add(
                await self.identity.new_user(
                    platform.id,
                    username=username,
                    email=email,
                    password=password,
                    roles=(Role.SUPERUSER, Role.OWNER),
                )
            )
            # A CLI command: an operator the platform knows as no user yet, so the system.
            await record_created(uow, None, made, user)
            await uow.commit()
        return user

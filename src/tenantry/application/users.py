"""Managing the users of one's own tenant."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from tenantry.application.audit import changed, record, snapshot
from tenantry.application.auth import USER_SHOWN, Identity
from tenantry.domain.auth import Actor
from tenantry.domain.errors import Conflict, Forbidden, Invalid, NotFound, found
from tenantry.domain.ports import UnitOfWork
from tenantry.domain.users import (
    EMAIL_PATTERN,
    Role,
    User,
    UserRepository,
    normalise_email,
    validate_roles,
)

# A user's settings are the user's own: the trail names them only.
HIDDEN = ("settings",)


def require_manager(actor: Actor) -> None:
    if not actor.can_manage:
        raise Forbidden("Only the tenant's owners and admins may do this.")


def check_role_grant(actor: Actor, roles: tuple[Role, ...]) -> None:
    """Only owners (and the platform) may make or unmake owners."""
    if Role.OWNER in roles and Role.OWNER not in actor.roles and not actor.is_superuser:
        raise Forbidden("Only an owner may grant the owner role.")


LAST_OWNER = "A tenant must keep at least one active owner."


async def keep_an_active_owner(
    users: UserRepository,
    user_id: UUID,
    *,
    roles: tuple[Role, ...] | None = None,
    is_active: bool | None = None,
    deleted: bool = False,
) -> None:
    """Refuse a change that would leave the tenant no active owner: the one keeper of that
    rule, for demotion, deactivation and deletion alike. The owners are read under a lock held
    to the end of the transaction, so of two owners removing each other at the same moment the
    second reads what the first committed and is refused, whatever its credential said."""
    takes_away = deleted or is_active is False or (roles is not None and Role.OWNER not in roles)
    if takes_away and await users.lock_active_owners() == {user_id}:
        raise Conflict(LAST_OWNER)


class ListUsers:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, actor: Actor, *, limit: int, offset: int) -> tuple[list[User], int]:
        async with self.uow:
            return await self.uow.repository(UserRepository, actor.tenant_id).list(
                limit=limit, offset=offset
            )


class GetUser:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, actor: Actor, user_id: UUID) -> User:
        async with self.uow:
            user = await self.uow.repository(UserRepository, actor.tenant_id).get(user_id)
        if user is None:
            raise NotFound("No such user.")
        return user


class CreateUser:
    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    async def __call__(
        self, actor: Actor, *, username: str, email: str, password: str, roles: list[str]
    ) -> User:
        require_manager(actor)
        chosen = validate_roles(roles)
        check_role_grant(actor, chosen)
        uow = self.identity.uow
        async with uow:
            new = await self.identity.new_user(
                actor.tenant_id, username=username, email=email, password=password, roles=chosen
            )
            user = await uow.repository(UserRepository, actor.tenant_id).add(new)
            await record(
                uow,
                actor,
                "user.created",
                ("user", user.id),
                changes={"after": snapshot(user, USER_SHOWN)},
            )
            await uow.commit()
        return user


class UpdateUser:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(
        self,
        actor: Actor,
        user_id: UUID,
        *,
        email: str | None = None,
        roles: list[str] | None = None,
        is_active: bool | None = None,
        settings: dict[str, Any] | None = None,
    ) -> User:
        is_self = user_id == actor.user_id
        if not is_self or roles is not None or is_active is not None:
            require_manager(actor)
        async with self.uow:
            users = self.uow.repository(UserRepository, actor.tenant_id)
            target = found(await users.get(user_id), "No such user.")
            if Role.OWNER in target.roles:
                check_role_grant(actor, target.roles)
            chosen = None
            if roles is not None:
                chosen = validate_roles(roles)
                check_role_grant(actor, chosen)
            # Ahead of the rule on oneself, so that the last owner hears the reason that stays.
            await keep_an_active_owner(users, user_id, roles=chosen, is_active=is_active)
            if is_self and (
                is_active is False or (chosen is not None and set(chosen) != set(target.roles))
            ):
                raise Forbidden("You cannot deactivate yourself or change your own roles.")
            if email is not None:
                email = normalise_email(email)
                if not EMAIL_PATTERN.match(email):
                    raise Invalid(
                        "The user is not valid.", fields={"email": "must be an email address"}
                    )
            updated = found(
                await users.update(
                    user_id, email=email, roles=chosen, is_active=is_active, settings=settings
                ),
                "No such user.",
            )
            await record(
                self.uow,
                actor,
                "user.updated",
                ("user", user_id),
                changes=changed(target, updated, shown=USER_SHOWN, hidden=HIDDEN),
            )
            await self.uow.commit()
        return updated


class DeleteUser:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    async def __call__(self, actor: Actor, user_id: UUID) -> None:
        require_manager(actor)
        async with self.uow:
            users = self.uow.repository(UserRepository, actor.tenant_id)
            target = found(await users.get(user_id), "No such user.")
            check_role_grant(actor, target.roles)
            await keep_an_active_owner(users, user_id, deleted=True)
            if user_id == actor.user_id:
                raise Forbidden("You cannot delete yourself.")
            # One deleted meanwhile is gone for this request too (see DeleteProject).
            if not await users.delete(user_id):
                raise NotFound("No such user.")
            await record(
                self.uow,
                actor,
                "user.deleted",
                ("user", user_id),
                changes={"before": snapshot(target, USER_SHOWN)},
            )
            await self.uow.commit()

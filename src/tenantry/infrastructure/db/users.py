"""User persistence, scoped to one tenant."""

from __future__ import annotations

from datetime import datetime
from functools import cached_property
from typing import Any
from uuid import UUID

from advanced_alchemy.exceptions import IntegrityError
from advanced_alchemy.filters import LimitOffset, OrderBy
from sqlalchemy import bindparam, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.domain.errors import Conflict
from tenantry.domain.tenants import TenantStatus
from tenantry.domain.users import NewUser, Role, User
from tenantry.infrastructure.db.models import RefreshTokenModel, TenantModel, UserModel
from tenantry.infrastructure.db.tenancy import (
    DriverStatement,
    TenantScopedRepository,
    lock_tenant_row,
    of_tenant,
)


class UserModelRepository(TenantScopedRepository[UserModel]):
    model_type = UserModel


_users, _tenants = UserModel.__table__, TenantModel.__table__
_refresh_tokens = RefreshTokenModel.__table__
# Every authenticated request runs this check: compiled once, run on the driver. A null
# session_id (an API key, a token from before sessions were named) matches no family.
_ACTIVE_ROLES = DriverStatement(
    select(_users.c.roles)
    .join(_tenants)  # on the users-to-tenants foreign key
    .where(
        of_tenant(_users),
        _users.c.id == bindparam("user_id"),
        _users.c.is_active.is_(True),
        _tenants.c.status == TenantStatus.ACTIVE.value,
        # Revoking a family marks every token of it: one revoked token means a revoked session.
        ~exists().where(
            of_tenant(_refresh_tokens),
            _refresh_tokens.c.family_id == bindparam("session_id"),
            _refresh_tokens.c.revoked_at.is_not(None),
        ),
    )
)


def to_user(row: UserModel) -> User:
    return User(
        id=row.id,
        tenant_id=row.tenant_id,
        username=row.username,
        email=row.email,
        roles=tuple(Role(role) for role in row.roles),
        settings=dict(row.settings),
        is_active=row.is_active,
        created_at=row.created_at,
        updated_at=row.updated_at,
        last_login_at=row.last_login_at,
    )


def taken_field(error: IntegrityError) -> str:
    """Which per-tenant unique index refused the row (they are indexes on lower(), not
    constraints, so advanced-alchemy reports a plain IntegrityError)."""
    message = str(error.__cause__ or error)
    if "uq_users_tenant_username" in message:
        return "username"
    if "uq_users_tenant_email" in message:
        return "email"
    raise error


class SqlUserRepository:
    def __init__(self, session: AsyncSession, tenant_id: UUID) -> None:
        self.session = session
        self.tenant_id = tenant_id

    @cached_property
    def repository(self) -> UserModelRepository:
        # Built on first use: the hot read runs on the driver and needs none.
        return UserModelRepository(session=self.session, tenant_id=self.tenant_id)

    async def add(self, user: NewUser) -> User:
        try:
            row = await self.repository.add(
                UserModel(
                    username=user.username,
                    email=user.email,
                    password_hash=user.password_hash,
                    roles=[role.value for role in user.roles],
                    settings={},
                    is_active=True,
                )
            )
        except IntegrityError as error:
            field = taken_field(error)
            raise Conflict(
                f"That {field} is taken in this tenant.", fields={field: "is taken"}
            ) from None
        return to_user(row)

    async def get(self, user_id: UUID) -> User | None:
        row = await self.repository.get_one_or_none(id=user_id)
        return None if row is None else to_user(row)

    async def find_by_login(self, login: str) -> tuple[User, str] | None:
        login = login.lower()
        row = await self.repository.get_one_or_none(
            or_(func.lower(UserModel.email) == login, func.lower(UserModel.username) == login)
        )
        return None if row is None else (to_user(row), row.password_hash)

    async def list(self, *, limit: int, offset: int) -> tuple[list[User], int]:
        rows, total = await self.repository.get_many_and_count(
            OrderBy(field_name="created_at", sort_order="asc"),
            LimitOffset(limit=limit, offset=offset),
        )
        return [to_user(row) for row in rows], total

    async def update(
        self,
        user_id: UUID,
        *,
        email: str | None = None,
        roles: tuple[Role, ...] | None = None,
        is_active: bool | None = None,
        settings: dict[str, Any] | None = None,
    ) -> User | None:
        changes: dict[str, Any] = {}
        if email is not None:
            changes["email"] = email
        if roles is not None:
            changes["roles"] = [role.value for role in roles]
        if is_active is not None:
            changes["is_active"] = is_active
        if settings is not None:
            changes["settings"] = settings
        row = await self.repository.get_one_or_none(id=user_id)
        if row is None:
            return None
        for name, value in changes.items():
            setattr(row, name, value)
        try:
            row = await self.repository.update(row)
        except IntegrityError as error:
            field = taken_field(error)
            raise Conflict(
                f"That {field} is taken in this tenant.", fields={field: "is taken"}
            ) from None
        return to_user(row)

    async def set_password_hash(self, user_id: UUID, password_hash: str) -> None:
        await self._write(user_id, password_hash=password_hash)

    async def record_login(self, user_id: UUID, at: datetime) -> None:
        await self._write(user_id, last_login_at=at)

    async def _write(self, user_id: UUID, **values: Any) -> None:
        statement = self.repository.update_rows().where(UserModel.id == user_id).values(**values)
        await self.session.execute(statement)

    async def delete(self, user_id: UUID) -> bool:
        row = await self.repository.get_one_or_none(id=user_id)
        if row is None:
            return False
        await self.repository.delete(row.id)
        return True

    async def active_roles(
        self, user_id: UUID, *, session_id: UUID | None = None
    ) -> tuple[Role, ...] | None:
        record = await _ACTIVE_ROLES.fetch_row(
            self.session, tenant_id=self.tenant_id, user_id=user_id, session_id=session_id
        )
        return None if record is None else tuple(Role(role) for role in record["roles"])

    async def lock_active_owners(self) -> set[UUID]:
        # The tenant's row stands for its owners: changes of owners queue behind each other.
        await lock_tenant_row(self.session, self.tenant_id)
        # A statement of its own, after the lock: under READ COMMITTED it sees what the last
        # holder committed.
        owners = await self.session.scalars(
            self.repository.scoped(
                select(UserModel.id).where(
                    UserModel.is_active.is_(True), UserModel.roles.contains([Role.OWNER.value])
                )
            )
        )
        return set(owners)

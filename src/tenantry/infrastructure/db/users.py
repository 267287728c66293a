"""User persistence, scoped to one tenant."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.exceptions import IntegrityError
from advanced_alchemy.filters import LimitOffset, OrderBy
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import Boolean, Index, String, bindparam, exists, func, or_, select, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.domain.errors import INVALID_CREDENTIALS, Conflict, Unauthenticated
from tenantry.domain.tenants import TenantStatus
from tenantry.domain.users import NewUser, Role, User, UserRepository
from tenantry.infrastructure.db.auth import RefreshTokenModel
from tenantry.infrastructure.db.base import TenantOwned
from tenantry.infrastructure.db.repository import TenantRows
from tenantry.infrastructure.db.tenancy import (
    TENANT_KEY,
    DriverStatement,
    Refusal,
    begin_with_check,
    check_first,
    of_tenant,
    sql_literals,
)
from tenantry.infrastructure.db.tenants import TenantModel, lock_tenant_row

# What a user made outlives them, unattributed: the column naming its maker, by table. The keys
# do not clear it (ON DELETE SET NULL of one column, which Citus refuses; migration
# 0020_citus_forms): deleting a user does, first. tests/integration/test_catalog.py holds every
# nullable key to users to this list.
MADE_BY = {
    "projects": "owner_id",
    "documents": "created_by",
    "files": "created_by",
    "tasks": "created_by",
    "webhook_endpoints": "created_by",
}
_UNATTRIBUTE = [
    text(
        f"update {table} set {column} = null "  # noqa: S608 - the constant names above
        f"where tenant_id = :tenant and {column} = :user"
    )
    for table, column in MADE_BY.items()
]


class UserModel(TenantOwned):
    __tablename__ = "users"
    __table_args__ = (
        Index("uq_users_tenant_email", "tenant_id", func.lower(text("email")), unique=True),
        Index("uq_users_tenant_username", "tenant_id", func.lower(text("username")), unique=True),
    )

    username: Mapped[str] = mapped_column(String(64))
    email: Mapped[str] = mapped_column(String(254))
    password_hash: Mapped[str] = mapped_column(String(255))
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(20)))
    settings: Mapped[dict[str, Any]] = mapped_column(
        JSONB, default=dict, server_default=text("'{}'::jsonb")
    )
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    last_login_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


_users, _tenants = UserModel.__table__, TenantModel.__table__
_refresh_tokens = RefreshTokenModel.__table__
# Every authenticated request runs this check: compiled once, run on the driver. A null
# session_id (an API key, a token from before sessions were named) matches no family.
_ACTIVE = (
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
_ACTIVE_ROLES = DriverStatement(_ACTIVE)
# The lock a key to the user takes: a delete of the user (FOR UPDATE) waits for it, or it for
# the delete, which it then finds done.
_ACTIVE_ROLES_HELD = DriverStatement(_ACTIVE.with_for_update(read=True, key_share=True, of=_users))

_BY_LOGIN = DriverStatement(
    select(_users).where(
        of_tenant(_users),
        or_(
            func.lower(_users.c.email) == bindparam("login"),
            func.lower(_users.c.username) == bindparam("login"),
        ),
    )
)

# The same read as one statement that sets its tenant (migration 0023_login_statements).
_BY_LOGIN_ALONE = DriverStatement(
    select(
        func.tenantry_user_by_login(
            bindparam(TENANT_KEY, type_=_users.c.tenant_id.type),
            bindparam("login", type_=String()),
        ).table_valued(*(column.name for column in _users.c))
    )
)

# The claimed roles confirmed in BEGIN's round trip (migration 0024_confirm_roles): the function
# raises ROLES_NOT_CONFIRMED where _ACTIVE_ROLES would answer other roles, or none.
_CONFIRM_ROLES = (
    "SELECT tenantry_confirm_roles({tenant_id}, {user_id}, {session_id}, "
    "{roles}::character varying[])"
)
ROLES_NOT_CONFIRMED = "TR001"


def _confirm_roles(claimed: tuple[Role, ...], **values: Any) -> str:
    return sql_literals(_CONFIRM_ROLES, roles=tuple(role.value for role in claimed), **values)


def _not_confirmed() -> Unauthenticated:
    return Unauthenticated(INVALID_CREDENTIALS)


# A confirmation of credentials refused, by this function or tenantry_confirm_api_key.
NOT_CONFIRMED: Refusal = (ROLES_NOT_CONFIRMED, _not_confirmed)


def taken_field(error: IntegrityError) -> str:
    """Which per-tenant unique index refused the row (they are indexes on lower(), not
    constraints, so advanced-alchemy reports a plain IntegrityError)."""
    message = str(error.__cause__ or error)
    if "uq_users_tenant_username" in message:
        return "username"
    if "uq_users_tenant_email" in message:
        return "email"
    raise error


class SqlUserRepository(TenantRows[User]):
    model = UserModel
    entity = User
    port = UserRepository

    async def add(self, user: NewUser) -> User:
        try:
            row = await self.orm.add(
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
        return self.of_model(row)

    async def get(self, user_id: UUID) -> User | None:
        row = await self.orm.get_one_or_none(id=user_id)
        return None if row is None else self.of_model(row)

    async def find_by_login(self, login: str, *, alone: bool = False) -> tuple[User, str] | None:
        # Every sign-in runs it: compiled once. Usernames hold no '@' and emails one, so one
        # login names at most one user of a tenant.
        values = {"tenant_id": self.tenant_id, "login": login.lower()}
        if alone:
            record = await _BY_LOGIN_ALONE.fetch_row_alone(self.session, **values)
        else:
            record = await _BY_LOGIN.fetch_row(self.session, **values)
        return None if record is None else (self.to_entity(record), record["password_hash"])

    async def list(self, *, limit: int, offset: int) -> tuple[list[User], int]:
        rows, total = await self.orm.get_many_and_count(
            OrderBy(field_name="created_at", sort_order="asc"),
            LimitOffset(limit=limit, offset=offset),
        )
        return [self.of_model(row) for row in rows], total

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
        row = await self.orm.get_one_or_none(id=user_id)
        if row is None:
            return None
        for name, value in changes.items():
            setattr(row, name, value)
        try:
            row = await self.orm.update(row)
        except IntegrityError as error:
            field = taken_field(error)
            raise Conflict(
                f"That {field} is taken in this tenant.", fields={field: "is taken"}
            ) from None
        return self.of_model(row)

    async def set_password_hash(self, user_id: UUID, password_hash: str) -> None:
        await self._write(user_id, password_hash=password_hash)

    async def record_login(self, user_id: UUID, at: datetime) -> None:
        await self._write(user_id, last_login_at=at)

    async def _write(self, user_id: UUID, **values: Any) -> None:
        statement = self.update_rows().where(UserModel.id == user_id).values(**values)
        await self.session.execute(statement)

    async def delete(self, user_id: UUID) -> bool:
        # Locked first: a write naming the user that is under way (its key's check holds the
        # row) commits before, and is then cleared with the rest; one that comes after waits,
        # then finds the user gone.
        row = await self.orm.get_one_or_none(id=user_id, with_for_update=True)
        if row is None:
            return False
        for statement in _UNATTRIBUTE:
            await self.session.execute(statement, {"tenant": self.tenant_id, "user": row.id})
        await self.orm.delete(row.id)
        return True

    async def active_roles(
        self,
        user_id: UUID,
        *,
        session_id: UUID | None = None,
        claimed: tuple[Role, ...] | None = None,
        held: bool = False,
    ) -> tuple[Role, ...] | None:
        values = {"tenant_id": self.tenant_id, "user_id": user_id, "session_id": session_id}
        if claimed is not None and not held:
            check = _confirm_roles(claimed, **values)
            if await begin_with_check(self.session, check, refused=ROLES_NOT_CONFIRMED):
                return claimed
        statement = _ACTIVE_ROLES_HELD if held else _ACTIVE_ROLES
        record = await statement.fetch_row(self.session, **values)
        return None if record is None else tuple(Role(role) for role in record["roles"])

    def confirm_roles_first(
        self, user_id: UUID, *, session_id: UUID | None, claimed: tuple[Role, ...]
    ) -> None:
        check = _confirm_roles(
            claimed, tenant_id=self.tenant_id, user_id=user_id, session_id=session_id
        )
        check_first(self.session, check, refused=NOT_CONFIRMED)

    async def lock_active_owners(self) -> set[UUID]:
        # The tenant's row stands for its owners: changes of owners queue behind each other.
        await lock_tenant_row(self.session, self.tenant_id)
        # A statement of its own, after the lock: under READ COMMITTED it sees what the last
        # holder committed.
        owners = await self.session.scalars(
            self.select(UserModel.id).where(
                UserModel.is_active.is_(True), UserModel.roles.contains([Role.OWNER.value])
            )
        )
        return set(owners)

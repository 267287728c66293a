"""Refresh tokens: stored as hashes, grouped in families, used once."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import (
    ClauseElement,
    ColumnElement,
    ForeignKeyConstraint,
    Index,
    Insert,
    String,
    Table,
    bindparam,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.domain.auth import RefreshToken, RefreshTokenRepository
from tenantry.domain.tenants import TenantStatus
from tenantry.infrastructure.db.base import TenantOwned, metadata
from tenantry.infrastructure.db.repository import TenantRows
from tenantry.infrastructure.db.tenancy import of_tenant


class RefreshTokenModel(TenantOwned):
    __tablename__ = "refresh_tokens"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "user_id"], ["users.tenant_id", "users.id"], ondelete="CASCADE"
        ),
        Index("uq_refresh_tokens_tenant_hash", "tenant_id", "token_hash", unique=True),
        Index("ix_refresh_tokens_tenant_family", "tenant_id", "family_id"),
    )

    user_id: Mapped[UUID]
    family_id: Mapped[UUID]
    token_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class SqlRefreshTokenRepository(TenantRows[RefreshToken]):
    model = RefreshTokenModel
    entity = RefreshToken
    port = RefreshTokenRepository

    async def add(
        self, *, user_id: UUID, family_id: UUID, token_hash: str, expires_at: datetime
    ) -> RefreshToken:
        record = await self.statement("add", _insert_token).fetch_row(
            self.session,
            **self._new_token(user_id, family_id, token_hash, expires_at),
        )
        assert record is not None, "INSERT ... RETURNING returns the row"
        return self.to_entity(record)

    async def start_session(
        self,
        *,
        user_id: UUID,
        family_id: UUID,
        token_hash: str,
        expires_at: datetime,
        signed_in_at: datetime,
        alone: bool = False,
    ) -> bool:
        # One round trip: the login recorded and the token stored only where the user (and
        # its tenant) is still active, which the UPDATE's RETURNING says.
        values = self._new_token(user_id, family_id, token_hash, expires_at)
        if alone:
            started = self.statement("start_session_alone", _start_session_alone)
            return bool(await started.fetch_value_alone(self.session, **values, at=signed_in_at))
        record = await self.statement("start_session", _start_session).fetch_row(
            self.session, **values, signed_in_at=signed_in_at
        )
        return record is not None

    def _new_token(
        self, user_id: UUID, family_id: UUID, token_hash: str, expires_at: datetime
    ) -> dict[str, object]:
        return self.arguments(
            # The model's own id default, a UUIDv7, as the ORM would fill it.
            id=_TOKENS.c.id.default.arg(None),  # type: ignore[union-attr]
            user_id=user_id,
            family_id=family_id,
            token_hash=token_hash,
            expires_at=expires_at,
        )

    async def get_by_hash(self, token_hash: str) -> RefreshToken | None:
        row = await self.orm.get_one_or_none(token_hash=token_hash)
        return None if row is None else self.of_model(row)

    async def mark_used(self, token_id: UUID, at: datetime) -> bool:
        # One conditional UPDATE: of two concurrent refreshes with one token, exactly one wins.
        statement = (
            self.update_rows()
            .where(
                RefreshTokenModel.id == token_id,
                RefreshTokenModel.used_at.is_(None),
            )
            .values(used_at=at)
            .returning(RefreshTokenModel.id)
        )
        return (await self.session.execute(statement)).first() is not None

    async def revoke_family(self, family_id: UUID, at: datetime) -> None:
        statement = (
            self.update_rows()
            .where(
                RefreshTokenModel.family_id == family_id,
                RefreshTokenModel.revoked_at.is_(None),
            )
            .values(revoked_at=at)
        )
        await self.session.execute(statement)


_TOKENS: Table = RefreshTokenModel.__table__  # type: ignore[assignment]
# What a new token's row takes as arguments (the repository's tenant among them); its times
# are the transaction's.
_TOKEN_VALUES = ("tenant_id", "id", "user_id", "family_id", "token_hash", "expires_at")


def _token_row() -> dict[str, ColumnElement[Any]]:
    values: dict[str, ColumnElement[Any]] = {
        name: bindparam(name, type_=_TOKENS.c[name].type) for name in _TOKEN_VALUES
    }
    return values | {"created_at": func.now(), "updated_at": func.now()}


def _insert_token() -> Insert:
    return insert(_TOKENS).values(_token_row()).returning(*_TOKENS.c)


def _start_session_alone() -> ClauseElement:
    """The same write as one statement that sets its tenant (migration
    0023_login_statements)."""
    row = _token_row()
    return select(
        func.tenantry_start_session(
            row["tenant_id"],
            row["user_id"],
            row["id"],
            row["family_id"],
            row["token_hash"],
            row["expires_at"],
            bindparam("at", type_=_TOKENS.c.expires_at.type),
        )
    )


def _start_session() -> ClauseElement:
    """``with signed_in as (update users ... returning id) insert into refresh_tokens select
    ... from signed_in``: no row when the user or its tenant is not active."""
    users, tenants = metadata.tables["users"], metadata.tables["tenants"]
    signed_in = (
        update(users)
        .where(
            of_tenant(users),
            users.c.id == bindparam("user_id"),
            users.c.is_active.is_(True),
            exists().where(
                tenants.c.id == bindparam("tenant_id"),
                tenants.c.status == TenantStatus.ACTIVE.value,
            ),
        )
        .values(
            last_login_at=bindparam("signed_in_at", type_=users.c.last_login_at.type),
            updated_at=func.now(),
        )
        .returning(users.c.id)
        .cte("signed_in")
    )
    row = _token_row()
    return (
        insert(_TOKENS)
        .from_select(list(row), select(*row.values()).select_from(signed_in))
        .returning(_TOKENS.c.id)
    )

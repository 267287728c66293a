"""Refresh tokens: stored as hashes, grouped in families, used once."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import ForeignKeyConstraint, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from tenantry.domain.auth import RefreshToken, RefreshTokenRepository
from tenantry.infrastructure.db.base import TenantOwned
from tenantry.infrastructure.db.repository import TenantRows


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
        row = await self.orm.add(
            RefreshTokenModel(
                user_id=user_id, family_id=family_id, token_hash=token_hash, expires_at=expires_at
            )
        )
        return self.of_model(row)

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

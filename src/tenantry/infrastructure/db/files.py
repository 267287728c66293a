"""File rows: what is known about each stored object, scoped to one tenant."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select

from tenantry.domain.files import FileRepository, StoredFile
from tenantry.infrastructure.db.models import FileModel
from tenantry.infrastructure.db.repository import SqlRepository
from tenantry.infrastructure.db.tenancy import lock_tenant_row, session_transaction


class SqlFileRepository(SqlRepository[StoredFile]):
    model = FileModel
    entity = StoredFile
    port = FileRepository

    async def usage(self) -> tuple[int, int]:
        table = self.table()
        statement = self.statement(
            "usage",
            lambda: (
                select(func.coalesce(func.sum(table.c.size), 0), func.count())
                .select_from(table)
                .where(*self.compiled_filters())
            ),
        )
        row = await statement.fetch_row(self.session, **self.arguments())
        assert row is not None, "an aggregate returns one row"
        used, count = row
        return int(used), int(count)

    async def deleted_before(self, cutoff: datetime, *, limit: int) -> Sequence[StoredFile]:
        table = self.table()
        statement = (
            self.select(include_deleted=True)
            .where(table.c.deleted_at.is_not(None), table.c.deleted_at < cutoff)
            .limit(limit)
        )
        connection = (await session_transaction(self.session)).connection
        return [self.to_entity(row) for row in (await connection.execute(statement)).mappings()]

    async def lock_usage(self) -> None:
        # A tenant's uploads check and take its quota one at a time.
        await lock_tenant_row(self.session, self.tenant_id)

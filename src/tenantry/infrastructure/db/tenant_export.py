"""The rows of a tenant export, read as the app role in transactions bound to the tenant.

The tables come from the catalog (``catalog.tenant_tables``), so a table a later migration adds
is exported without a line here; each is paged by its primary key (keyset, never an offset),
its secret columns left out as ``domain.tenant_export`` lists them.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import (
    BindParameter,
    Column,
    MetaData,
    Select,
    Table,
    any_,
    bindparam,
    exists,
    select,
    text,
    tuple_,
)
from sqlalchemy.sql.expression import ClauseElement

from tenantry.domain.files import StoredFile
from tenantry.domain.tenant_export import (
    TASK_TYPE,
    TENANTS,
    ExportTable,
    TenantExportRepository,
    exported,
)
from tenantry.infrastructure.db.catalog import tenant_tables
from tenantry.infrastructure.db.files import FileModel
from tenantry.infrastructure.db.repository import TenantRows
from tenantry.infrastructure.db.tasks import TaskModel
from tenantry.infrastructure.db.tenancy import TENANT_KEY, of_tenant

# Every table's primary key columns, in the key's order.
_KEYS = text(
    """
    select c.relname as name,
      array(select a.attname from unnest(i.indkey::int2[]) with ordinality k(num, position)
            join pg_attribute a on a.attrelid = c.oid and a.attnum = k.num
            order by k.position) as key
    from pg_index i
    join pg_class c on c.oid = i.indrelid
    where i.indisprimary and c.relnamespace = current_schema()::regnamespace
    """
)
_TENANT_COLUMNS = text(
    """
    select array(select a.attname from pg_attribute a
                 where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
                 order by a.attnum) as columns
    from pg_class c
    where c.relname = :name and c.relnamespace = current_schema()::regnamespace
    """
)

_FILES: Table = FileModel.__table__  # type: ignore[assignment]
_TASKS: Table = TaskModel.__table__  # type: ignore[assignment]


class SqlTenantExportRepository(TenantRows[Any]):
    port = TenantExportRepository

    async def tables(self) -> list[ExportTable]:
        keys = {row.name: tuple(row.key) for row in (await self.session.execute(_KEYS)).all()}
        own = await self.session.scalar(_TENANT_COLUMNS, {"name": TENANTS})
        found = [(TENANTS, tuple(own or ()))]
        found += [(table.name, table.columns) for table in await tenant_tables(self.session)]
        listed = []
        for name, columns in found:
            if name not in keys:
                raise LookupError(f"table {name} has no primary key: an export cannot page it")
            if not all(exported(name, column) for column in keys[name]):
                raise LookupError(
                    f"table {name}'s key is a secret column: rows cannot be told apart"
                )
            listed.append(
                ExportTable(
                    name=name,
                    columns=tuple(column for column in columns if exported(name, column)),
                    key=keys[name],
                )
            )
        return listed

    async def rows(
        self, table: ExportTable, *, after: tuple[Any, ...] | None, limit: int
    ) -> list[dict[str, Any]]:
        def build() -> ClauseElement:
            return _page(table, first=after is None)

        values = self.arguments(limit=limit)
        values.update({f"after_{index}": value for index, value in enumerate(after or ())})
        statement = self.statement(("rows", table, after is None), build)
        return [
            {str(name): value for name, value in record.items()}
            for record in await statement.fetch(self.session, **values)
        ]

    async def live_files(self, *, after: UUID | None, limit: int) -> list[StoredFile]:
        def build() -> ClauseElement:
            earlier_exports = exists().where(
                of_tenant(_TASKS),
                _TASKS.c.type == TASK_TYPE,
                _FILES.c.id == any_(_TASKS.c.output_files),
            )
            statement = select(_FILES).where(
                of_tenant(_FILES), _FILES.c.deleted_at.is_(None), ~earlier_exports
            )
            if after is not None:
                statement = statement.where(_FILES.c.id > bindparam("after"))
            return statement.order_by(_FILES.c.id).limit(bindparam("limit"))

        statement = self.statement(("live_files", after is None), build)
        records = await statement.fetch(self.session, **self.arguments(after=after, limit=limit))
        return [
            msgspec.convert({str(name): value for name, value in record.items()}, StoredFile)
            for record in records
        ]


def _page(spec: ExportTable, *, first: bool) -> Select[Any]:
    """A page of ``spec``'s rows of the tenant in the statement's ``tenant_id`` parameter, in
    key order, after the key in ``after_<n>`` unless ``first``."""
    # Untyped columns: the rows go out as the driver decodes them, and the keys come back in.
    table = Table(
        spec.name, MetaData(), *(Column(name) for name in dict.fromkeys((*spec.columns, *spec.key)))
    )
    own = table.c.id == bindparam(TENANT_KEY) if spec.name == TENANTS else of_tenant(table)
    key = [table.c[name] for name in spec.key]
    statement = select(*(table.c[name] for name in spec.columns)).where(own)
    if not first:
        bounds: list[BindParameter[Any]] = [
            bindparam(f"after_{index}") for index in range(len(key))
        ]
        statement = statement.where(tuple_(*key) > tuple_(*bounds))
    return statement.order_by(*key).limit(bindparam("limit"))

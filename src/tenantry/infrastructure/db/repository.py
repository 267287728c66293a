"""The generic tenant repository: every statement of a tenant-owned entity, built once.

A feature's repository is a subclass naming its model, its domain entity and its port; get,
list, count, add, add many, update with an expected version, soft delete and delete come from
here. Rows become domain objects by field name (``msgspec.convert``): the entity's fields are
its table's column names. What a feature adds of its own starts from :meth:`select`,
:meth:`update_rows` and :meth:`delete_rows`, which carry the tenant (and, for soft-deletable
entities, the live-row filter), or from :meth:`statement` for one compiled once.

The statements of the generic port (get, list's page and total, insert, update, soft delete,
delete, count) are compiled once per shape and run on the driver connection of the unit of
work's one transaction; a list's are built from advanced-alchemy's filters (search, order,
created range, limit/offset) with stand-in values that become arguments (listing.py). add_many
goes through SQLAlchemy Core (its batched inserts).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from datetime import datetime
from functools import cache, cached_property
from typing import Any, ClassVar, Generic, TypeVar
from uuid import UUID

import asyncpg
import msgspec
from sqlalchemy import (
    ColumnElement,
    Delete,
    Select,
    Table,
    Update,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import ClauseElement
from sqlalchemy.sql.schema import CallableColumnDefault, ScalarElementColumnDefault

from tenantry.domain.errors import StaleVersion
from tenantry.domain.repository import ListQuery
from tenantry.infrastructure.db import listing
from tenantry.infrastructure.db.base import TenantOwned
from tenantry.infrastructure.db.tenancy import (
    TENANT_KEY,
    DriverStatement,
    TenantScopedRepository,
    append_at_commit,
    bind_tenant,
    of_tenant,
    session_transaction,
)

T = TypeVar("T")

# The repository class of each domain port, as each feature's module declares it.
IMPLEMENTATIONS: dict[Any, type[TenantRows[Any]]] = {}

# The repository class of each platform-level port (rows of no tenant), as declared by
# subclassing PlatformRows.
PLATFORM_IMPLEMENTATIONS: dict[Any, type[PlatformRows]] = {}

# The prefix of the row's columns as they were, in an update's answer (update_with_before).
BEFORE = "before_"

# Compiled statements of every repository class, by class and shape.
_COMPILED: dict[tuple[type[Any], Hashable], DriverStatement] = {}


class TenantRows(Generic[T]):
    """One tenant's rows of one entity, and the scoped statements a repository builds from.
    Subclasses set ``model`` and ``entity``, and ``port`` when the unit of work hands them
    out. A repository whose port is not the generic one (users, API keys) starts here."""

    model: ClassVar[type[TenantOwned]]
    entity: ClassVar[type[Any]]
    # The domain port this class implements: the unit of work hands it out for that port.
    port: ClassVar[Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "port" in cls.__dict__:
            IMPLEMENTATIONS[cls.port] = cls

    def __init__(self, session: AsyncSession, tenant_id: UUID) -> None:
        bind_tenant(session, tenant_id)
        self.session = session
        self.tenant_id = tenant_id

    @classmethod
    def table(cls) -> Table:
        return cls.model.__table__  # type: ignore[return-value]

    @classmethod
    def soft_deletable(cls) -> bool:
        return "deleted_at" in cls.table().c

    @classmethod
    def versioned(cls) -> bool:
        return "version" in cls.table().c

    # The scoped statements a feature builds its own from.

    def filters(self, *, include_deleted: bool = False) -> list[ColumnElement[bool]]:
        """What every statement of this repository carries: its tenant, and live rows."""
        return self._scope(of_tenant(self.table(), self.tenant_id), include_deleted)

    def _scope(
        self, tenant: ColumnElement[bool], include_deleted: bool
    ) -> list[ColumnElement[bool]]:
        found = [tenant]
        if self.soft_deletable() and not include_deleted:
            found.append(self.table().c.deleted_at.is_(None))
        return found

    def select(self, *columns: Any, include_deleted: bool = False) -> Select[Any]:
        return select(*(columns or (self.table(),))).where(
            *self.filters(include_deleted=include_deleted)
        )

    def update_rows(self, *, include_deleted: bool = False) -> Update:
        return update(self.table()).where(*self.filters(include_deleted=include_deleted))

    def delete_rows(self) -> Delete:
        return delete(self.table()).where(*self.filters(include_deleted=True))

    def statement(
        self,
        shape: Hashable,
        build: Callable[[], ClauseElement],
        placeholders: Mapping[Any, str] | None = None,
    ) -> DriverStatement:
        """The statement ``build`` makes, compiled once per class and ``shape``. It must scope
        its rows with :meth:`compiled_filters`: the tenant is a parameter, bound at each run."""
        key = (type(self), shape)
        found = _COMPILED.get(key)
        if found is None:
            found = _COMPILED[key] = DriverStatement(build(), placeholders=placeholders)
        return found

    def compiled_filters(
        self, *, include_deleted: bool = False, where: Sequence[str] = ()
    ) -> list[ColumnElement[bool]]:
        """:meth:`filters` for a statement compiled once, with each ``where`` name an equality
        on its column, bound at each run as ``w_<name>``."""
        table = self.table()
        found = self._scope(of_tenant(table), include_deleted)
        found.extend(table.c[name] == bindparam(f"w_{name}") for name in where)
        return found

    def touched(self) -> dict[str, Any]:
        """What every UPDATE sets besides its changes: each column the model updates itself
        (``updated_at``), to the transaction's time. (A statement compiled once cannot have
        SQLAlchemy compute it in Python at each run.)"""
        return {column.name: func.now() for column in self.table().c if column.onupdate is not None}

    def to_entity(self, row: Mapping[str, Any] | Mapping[Any, Any]) -> T:
        """A row (a driver record or a Core row's mapping) as the domain entity."""
        # str(): a column named explicitly ("metadata") is keyed by SQLAlchemy's quoted_name,
        # a str subclass that msgspec does not take as a field name.
        return msgspec.convert(  # type: ignore[no-any-return]
            {str(name): value for name, value in row.items()}, self.entity
        )

    def of_model(self, instance: TenantOwned) -> T:
        """An ORM instance as the domain entity, by attribute name."""
        return msgspec.convert(instance, self.entity, from_attributes=True)  # type: ignore[no-any-return]

    def arguments(self, where: Mapping[str, Any] | None = None, **values: Any) -> dict[str, Any]:
        """The values a compiled statement runs with: the tenant, ``where`` as ``w_<name>``
        (see :meth:`compiled_filters`), and ``values``."""
        values[TENANT_KEY] = self.tenant_id
        values.update({f"w_{name}": value for name, value in (where or {}).items()})
        return values

    @cached_property
    def orm(self) -> TenantScopedRepository[Any]:
        """advanced-alchemy's repository over the same rows, for what the ORM does best."""
        return _orm_repository(self.model)(session=self.session, tenant_id=self.tenant_id)


class PlatformRows:
    """Platform rows, no tenant's (the erasure log): a subclass naming its ``port`` is what the
    unit of work hands out for that port (``uow.platform(port)``)."""

    port: ClassVar[Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "port" in cls.__dict__:
            PLATFORM_IMPLEMENTATIONS[cls.port] = cls

    def __init__(self, session: AsyncSession) -> None:
        self.session = session


class SqlRepository(TenantRows[T]):
    """The generic port (:class:`tenantry.domain.repository.Repository`) on top of
    :class:`TenantRows`: what a tenant-owned entity with plain CRUD needs and nothing else."""

    async def get(self, id: UUID, /, *, include_deleted: bool = False, **where: Any) -> T | None:
        names = tuple(sorted(where))
        table = self.table()
        statement = self.statement(
            ("get", include_deleted, names),
            lambda: select(table).where(
                *self.compiled_filters(include_deleted=include_deleted, where=names),
                table.c.id == bindparam("id"),
            ),
        )
        record = await statement.fetch_row(self.session, **self.arguments(where, id=id))
        return None if record is None else self.to_entity(record)

    async def count(self, *, include_deleted: bool = False, **where: Any) -> int:
        names = tuple(sorted(where))
        statement = self.statement(
            ("count", include_deleted, names),
            lambda: (
                select(func.count())
                .select_from(self.table())
                .where(*self.compiled_filters(include_deleted=include_deleted, where=names))
            ),
        )
        return int(await statement.fetch_value(self.session, **self.arguments(where)))

    async def add(self, **values: Any) -> T:
        row = self._new_row(values)
        names = tuple(sorted(row))
        table = self.table()
        statement = self.statement(
            ("add", names),
            lambda: (
                insert(table)
                .values({name: bindparam(name, type_=table.c[name].type) for name in names})
                .returning(*table.c)
            ),
        )
        record = await statement.fetch_row(self.session, **row)
        assert record is not None, "INSERT ... RETURNING returns the row"
        return self.to_entity(record)

    async def add_at_commit(self, **values: Any) -> T:
        row = self._new_row(values)
        # The entity is the row as given: a column left out is NULL, its table's default being
        # none (_unset_columns refuses one whose value only the database would know).
        entity = self.to_entity(dict.fromkeys(_unset_columns(self.table(), row)) | row)
        self._insert_at_commit(row)
        return entity

    def _insert_at_commit(self, row: dict[str, Any]) -> None:
        """Have the commit insert ``row``, whole, as :meth:`add_at_commit` promises."""
        append_at_commit(self.session, self.table(), self.tenant_id, row)

    async def add_many(self, rows: Sequence[Mapping[str, Any]]) -> list[T]:
        if not rows:
            return []
        connection = (await session_transaction(self.session)).connection
        inserted = await connection.execute(
            insert(self.table()).returning(*self.table().c, sort_by_parameter_order=True),
            [self._new_row(dict(row)) for row in rows],
        )
        return [self.to_entity(row) for row in inserted.mappings()]

    def _new_row(self, values: dict[str, Any]) -> dict[str, Any]:
        if values.setdefault(TENANT_KEY, self.tenant_id) != self.tenant_id:
            raise ValueError("a row of another tenant cannot be added here")
        # The model's own defaults (a UUIDv7 id, the times, a version of 1 ...), as the ORM
        # would fill them: a statement compiled once cannot compute them itself.
        for name, default in _python_defaults(self.table()):
            if name not in values:
                # SQLAlchemy wraps the model's callables to take a context they ignore.
                values[name] = default.arg(None) if default.is_callable else default.arg
        return values

    async def update(
        self,
        id: UUID,
        changes: Mapping[str, Any],
        /,
        *,
        expected_version: int | None = None,
        **where: Any,
    ) -> T | None:
        record = await self._updated(id, changes, expected_version, where, before=False)
        return None if record is None else self.to_entity(record)

    async def update_with_before(
        self,
        id: UUID,
        changes: Mapping[str, Any],
        /,
        *,
        expected_version: int | None = None,
        **where: Any,
    ) -> tuple[T, T] | None:
        record = await self._updated(id, changes, expected_version, where, before=True)
        if record is None:
            return None
        names = [column.name for column in self.table().c]
        return (
            self.to_entity({name: record[BEFORE + name] for name in names}),
            self.to_entity({name: record[name] for name in names}),
        )

    async def _updated(
        self,
        id: UUID,
        changes: Mapping[str, Any],
        expected_version: int | None,
        where: Mapping[str, Any],
        *,
        before: bool,
    ) -> asyncpg.Record | None:
        """The updated row; with ``before``, the row as the statement found it too, each column
        under ``BEFORE`` + its name: the table joined to itself on its key, which PostgreSQL 15
        answers in one statement (it has no ``RETURNING OLD``). The joined row is the one the
        statement's snapshot holds: a writer committing meanwhile bumps the version, and an
        expected version then refuses the update, as it would after a read of its own."""
        names, keys = tuple(sorted(changes)), tuple(sorted(where))
        table = self.table()
        checked = expected_version is not None

        def build() -> ClauseElement:
            bump = self.touched()
            if self.versioned():
                bump["version"] = table.c.version + 1
            statement = (
                update(table)
                .where(*self.compiled_filters(where=keys), table.c.id == bindparam("id"))
                .values(
                    {name: bindparam(f"set_{name}", type_=table.c[name].type) for name in names}
                    | bump
                )
                .returning(*table.c)
            )
            if checked:
                statement = statement.where(table.c.version == bindparam("expected_version"))
            if before:
                previous = table.alias("previous")
                statement = statement.where(of_tenant(previous), previous.c.id == table.c.id)
                statement = statement.returning(
                    *(column.label(BEFORE + column.name) for column in previous.c)
                )
            return statement

        values = self.arguments(where, id=id, expected_version=expected_version)
        values.update({f"set_{name}": value for name, value in changes.items()})
        shape = ("update", names, checked, keys, before)
        record = await self.statement(shape, build).fetch_row(self.session, **values)
        if record is None and checked and await self.get(id, **where) is not None:
            noun = self.entity.__name__.lower()
            raise StaleVersion(f"The {noun} changed since you read it; fetch it and retry.")
        return record

    async def soft_delete(self, id: UUID, /, at: datetime, **where: Any) -> T | None:
        keys = tuple(sorted(where))
        table = self.table()
        statement = self.statement(
            ("soft_delete", keys),
            lambda: (
                update(table)
                .where(*self.compiled_filters(where=keys), table.c.id == bindparam("id"))
                .values(deleted_at=bindparam("at", type_=table.c.deleted_at.type), **self.touched())
                .returning(*table.c)
            ),
        )
        record = await statement.fetch_row(self.session, **self.arguments(where, id=id, at=at))
        return None if record is None else self.to_entity(record)

    async def soft_delete_all_at_commit(self, at: datetime, **where: Any) -> None:
        keys = tuple(sorted(where))
        table = self.table()
        statement = self.statement(
            ("soft_delete_all", keys),
            lambda: (
                update(table)
                .where(*self.compiled_filters(where=keys))
                .values(deleted_at=bindparam("at", type_=table.c.deleted_at.type), **self.touched())
            ),
        )
        statement.run_at_commit(self.session, self.tenant_id, **self.arguments(where, at=at))

    async def delete(self, id: UUID, /, **where: Any) -> bool:
        keys = tuple(sorted(where))
        table = self.table()
        statement = self.statement(
            ("delete", keys),
            lambda: (
                delete(table)
                .where(
                    *self.compiled_filters(include_deleted=True, where=keys),
                    table.c.id == bindparam("id"),
                )
                .returning(table.c.id)
            ),
        )
        return await statement.fetch_row(self.session, **self.arguments(where, id=id)) is not None

    async def list(
        self, query: ListQuery, /, *, include_deleted: bool = False, **where: Any
    ) -> tuple[list[T], int]:
        keys = tuple(sorted(where))
        shape = (include_deleted, keys, *listing.shape(query))
        narrowed = listing.stand_ins(query)
        search_field = getattr(self.entity, "search_field", None)

        # Built only when a shape is first seen: the compiled statement serves every later one.
        def matching() -> Select[Any]:
            statement = select(self.table()).where(
                *self.compiled_filters(include_deleted=include_deleted, where=keys)
            )
            for narrowing in listing.narrowing(narrowed, search_field):
                statement = narrowing.append_to_statement(statement, self.model)
            return statement

        values = self.arguments(where, **listing.arguments(query))

        def page() -> ClauseElement:
            statement = matching()
            for paging in listing.paging(narrowed):
                statement = paging.append_to_statement(statement, self.model)
            return statement

        rows = await self.statement(("page", *shape), page, listing.PLACEHOLDERS).fetch(
            self.session, **values
        )
        if 0 < len(rows) < query.limit or (query.offset == 0 and not rows):
            total = query.offset + len(rows)  # this page holds the last of them
        else:
            count = self.statement(
                ("count", *shape),
                lambda: select(func.count()).select_from(matching().subquery()),
                listing.PLACEHOLDERS,
            )
            total = int(await count.fetch_value(self.session, **values))
        return [self.to_entity(row) for row in rows], total


@cache
def _python_defaults(table: Table) -> tuple[tuple[str, Any], ...]:
    """The columns of ``table`` whose default the ORM computes in Python, and those defaults."""
    return tuple(
        (column.name, column.default)
        for column in table.c
        if isinstance(column.default, ScalarElementColumnDefault | CallableColumnDefault)
    )


def _unset_columns(table: Table, row: Mapping[str, Any]) -> list[str]:
    """The columns ``row`` leaves out, NULL once inserted; a TypeError for one the database
    would fill in (a server default, a computed column) or refuse to leave NULL."""
    unset = [column for column in table.c if column.name not in row]
    for column in unset:
        if column.server_default is not None or column.computed is not None or not column.nullable:
            raise TypeError(f"{table.name}.{column.name} needs a value given")
    return [column.name for column in unset]


@cache
def _orm_repository(model: type[TenantOwned]) -> type[TenantScopedRepository[Any]]:
    return type(f"{model.__name__}Repository", (TenantScopedRepository,), {"model_type": model})

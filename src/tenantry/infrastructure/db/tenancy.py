"""Tenancy's two walls, as the database layer builds them.

Wall 1: repositories that cannot be built without a tenant; they filter every read, update and
delete by ``tenant_id`` and stamp it on every insert, bulk paths included.

Wall 2: PostgreSQL row level security. A session bound to a tenant sets ``app.tenant_id`` with
``set_config(..., true)`` in every transaction it runs, right after BEGIN (in BEGIN's round trip
for a transaction begun on the driver) and again whenever it is bound to another tenant
mid-transaction. The setting is transaction-local, so a pooled
connection never carries one request's tenant into the next; the policies read an unset or
empty setting as "no tenant" and show nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import cache, partial
from typing import Any, ClassVar, Generic, TypeVar
from uuid import UUID

import asyncpg
from advanced_alchemy.exceptions import NotFoundError
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import ColumnElement, Select, Table, Update, bindparam, event, select, text, update
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_scoped_session
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, UOWTransaction
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import await_, greenlet_spawn

from tenantry.domain.errors import Unavailable
from tenantry.infrastructure.db.models import TenantModel, TenantOwned

ModelT = TypeVar("ModelT", bound=TenantOwned)
SelectT = TypeVar("SelectT", bound=Select[*tuple[Any, ...]])

TENANT_KEY = "tenant_id"
_SET_TENANT = text("select set_config('app.tenant_id', :tenant_id, true)")
_SET_TENANT_SQL = "select set_config('app.tenant_id', $1, true)"


def of_tenant(entity: Any, tenant_id: UUID | None = None) -> ColumnElement[bool]:
    """The first wall's predicate, written here and nowhere else: the rows of ``entity`` (a
    mapped class or a table) that belong to ``tenant_id``; without one, to the tenant passed as
    the ``tenant_id`` parameter when the statement runs (for statements compiled once)."""
    column = entity.c.tenant_id if isinstance(entity, Table) else entity.tenant_id
    return column == (bindparam(TENANT_KEY) if tenant_id is None else tenant_id)  # type: ignore[no-any-return]


async def lock_tenant_row(
    session: AsyncSession | async_scoped_session[AsyncSession], tenant_id: UUID
) -> None:
    """Hold the tenant's row until the transaction ends, so that a check over the tenant's rows
    (its quota, its owners) and the write it allows run one writer at a time.

    FOR NO KEY UPDATE (key_share=True): writers queue behind each other, but not behind the
    key-share lock every foreign key to the tenant takes; with FOR UPDATE two writers that
    inserted rows first would deadlock.
    """
    await session.execute(
        select(TenantModel.id).where(TenantModel.id == tenant_id).with_for_update(key_share=True)
    )


def bind_tenant(session: AsyncSession, tenant_id: UUID) -> None:
    """Make every later statement of ``session`` run under ``tenant_id``'s row level security."""
    session.info[TENANT_KEY] = str(tenant_id)


def _apply_tenant(session: Session, connection: Connection) -> None:
    wanted = session.info.get(TENANT_KEY)
    if wanted is not None and connection.info.get(TENANT_KEY) != wanted:
        connection.execute(_SET_TENANT, {"tenant_id": wanted})
        connection.info[TENANT_KEY] = wanted


def _before_orm_connection(session: Session) -> None:
    """The driver transaction ends before the ORM takes a connection of its own: a session
    holding two could wait forever on a pool that its own first one helped empty."""
    if DriverTransaction.KEY in session.info:
        await_(DriverTransaction.end(session.info))


@event.listens_for(Session, "after_begin")
def _on_begin(session: Session, _: SessionTransaction, connection: Connection) -> None:
    # A new transaction starts with no setting: set_config(..., true) ended with the last one.
    connection.info.pop(TENANT_KEY, None)
    _apply_tenant(session, connection)


@event.listens_for(Session, "do_orm_execute")
def _on_execute(state: ORMExecuteState) -> None:
    if TENANT_KEY in state.session.info:
        _before_orm_connection(state.session)
        _apply_tenant(state.session, state.session.connection())


@event.listens_for(Session, "before_flush")
def _on_flush(session: Session, _: UOWTransaction, __: Any) -> None:
    if TENANT_KEY in session.info:
        _before_orm_connection(session)
        _apply_tenant(session, session.connection())


@cache
def _base_statement(model: type[TenantOwned]) -> Select[Any]:
    # Statements are immutable, so one per model serves every repository: building select(model)
    # anew was most of the cost of the repositories each request constructs.
    return select(model)


# SQLAlchemy's dialect classes carry no annotations.
_ASYNCPG = asyncpg_dialect.dialect()  # type: ignore[no-untyped-call]


class DriverStatement:
    """A Core statement compiled once for asyncpg, run on the driver connection. For the hottest
    reads only: SQLAlchemy's per-statement work (the ORM session, greenlet hops, result
    wrapping) cost several times the round trip itself. It runs in the session's transaction
    when the ORM has one, else in the session's :class:`DriverTransaction`. The statement stays
    the one source of its SQL; rows come back as asyncpg records."""

    def __init__(self, statement: Select[Any]) -> None:
        compiled = statement.compile(dialect=_ASYNCPG)
        self.sql = str(compiled)
        # Literals of the statement (a status value, say) are fixed; bindparam()s are asked for.
        self._arguments = [
            (name, compiled.binds[name].value is None, compiled.params[name])
            for name in compiled.positiontup or ()
        ]

    async def fetch_row(self, session: AsyncSession, **values: Any) -> asyncpg.Record | None:
        arguments = [values[name] if asked else fixed for name, asked, fixed in self._arguments]
        if session.in_transaction():
            connection = await tenant_connection(session)
            driver: asyncpg.Connection = (await connection.get_raw_connection()).driver_connection
            discard: Callable[[BaseException], Awaitable[None]] = connection.invalidate
        else:
            driver = (await DriverTransaction.of(session)).driver
            discard = partial(DriverTransaction.discard, session)
        try:
            return await driver.fetchrow(self.sql, *arguments)
        except asyncpg.QueryCanceledError as error:
            raise Unavailable("database statement timed out") from error
        except _LOST as error:
            if isinstance(error, asyncpg.InterfaceError) and not driver.is_closed():
                raise
            # What SQLAlchemy does for its own statements: the connection is discarded, not
            # rolled back and returned to the pool.
            await discard(error)
            raise Unavailable(f"database lost ({type(error).__name__})") from error


_LOST = (
    OSError,  # TimeoutError included: no answer within the statement timeout
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a protocol state broken by a server going down
)


class DriverTransaction:
    """A pooled connection in a transaction begun on the driver, for a session that has run
    only :class:`DriverStatement` reads so far (the bearer check and get-by-id): no ORM
    transaction, engine connection or execution context is built for them, and BEGIN goes in
    one round trip with the tenant's ``set_config`` (the simple query protocol takes both).

    It ends when the session commits, rolls back or closes (the request's session closes as
    its response starts), or before the ORM takes a connection (``_before_orm_connection``):
    a session holds one transaction at a time, so a later write never waits on a connection
    it holds itself."""

    KEY = "driver_transaction"

    def __init__(self, pooled: PoolProxiedConnection, tenant: str) -> None:
        self.pooled = pooled
        self.driver: asyncpg.Connection = pooled.driver_connection
        self.tenant = tenant

    @classmethod
    async def of(cls, session: AsyncSession) -> DriverTransaction:
        """The session's driver transaction, begun now if need be, bound to its tenant."""
        wanted: str = session.info[TENANT_KEY]
        current: DriverTransaction | None = session.info.get(cls.KEY)
        if current is not None and current.tenant == wanted:
            return current
        engine = session.bind
        assert isinstance(engine, AsyncEngine), "sessions are bound to the async engine"
        try:
            if current is None:
                current = session.info[cls.KEY] = cls(await engine.raw_connection(), wanted)
                # A UUID's text, checked again: the one value put in SQL by hand.
                await current.driver.execute(
                    f"BEGIN; SELECT set_config('app.tenant_id', '{UUID(wanted)}', true)"
                )
            else:
                # Rebound to another tenant mid-transaction.
                await current.driver.execute(_SET_TENANT_SQL, wanted)
                current.tenant = wanted
        except _LOST as error:
            await cls.discard(session, error)
            raise Unavailable(f"database lost ({type(error).__name__})") from error
        return current

    @classmethod
    async def end(cls, info: dict[str, Any], *, commit: bool = False) -> None:
        """Commit or roll back the driver transaction of the session with ``info``, if any,
        and return its connection to the pool."""
        current: DriverTransaction | None = info.pop(cls.KEY, None)
        if current is None:
            return
        try:
            await current.driver.execute("COMMIT" if commit else "ROLLBACK")
        except _LOST as error:
            await greenlet_spawn(current.pooled.invalidate, error)
            if commit:  # its outcome is unknown
                raise Unavailable(f"database lost ({type(error).__name__})") from error
        except asyncpg.PostgresError:
            # Answered (a deferred constraint, say): the transaction is over, the connection sound.
            await greenlet_spawn(current.pooled.close)
            raise
        except BaseException as error:
            # Cancelled mid-answer: what the connection would say next is unknown.
            await greenlet_spawn(current.pooled.invalidate, error)
            raise
        else:
            await greenlet_spawn(current.pooled.close)

    @classmethod
    async def discard(cls, session: AsyncSession, error: BaseException) -> None:
        current: DriverTransaction | None = session.info.pop(cls.KEY, None)
        if current is not None:
            await greenlet_spawn(current.pooled.invalidate, error)


class TenantSession(AsyncSession):
    """The session of every unit of work: its commit, rollback and close end its
    :class:`DriverTransaction` too, so the connection that holds it goes back to the pool."""

    async def commit(self) -> None:
        await super().commit()
        await DriverTransaction.end(self.info, commit=True)

    async def rollback(self) -> None:
        await DriverTransaction.end(self.info)
        if self.in_transaction():  # else nothing to undo, and no greenlet to start for it
            await super().rollback()

    async def close(self) -> None:
        await DriverTransaction.end(self.info)
        await super().close()

    async def connection(self, *args: Any, **kwargs: Any) -> AsyncConnection:
        # What _before_orm_connection does for ORM statements and flushes.
        await DriverTransaction.end(self.info)
        return await super().connection(*args, **kwargs)


async def tenant_connection(session: AsyncSession) -> AsyncConnection:
    """The connection of ``session``'s transaction, bound to the session's tenant."""
    wanted = session.info[TENANT_KEY]
    # A new transaction gets its tenant in _on_begin, which also makes the driver BEGIN.
    connection = await session.connection()
    if connection.info.get(TENANT_KEY) != wanted:
        # Rebound to another tenant mid-transaction.
        await connection.execute(_SET_TENANT, {"tenant_id": wanted})
        connection.info[TENANT_KEY] = wanted
    return connection


class TenantScopedRepository(SQLAlchemyAsyncRepository[ModelT], Generic[ModelT]):
    """advanced-alchemy's repository, confined to one tenant on every path.

    The base ``statement`` scopes get, list, count and exists; the bulk paths build their own
    statements and ignore it, so each is overridden here. A feature's own statements start
    from :meth:`scoped` (selects) or :meth:`update_rows`, which carry the same filters.
    """

    # A separate count query: count(*) OVER () slows down on large tables.
    count_with_window_function = False
    # Soft-deletable models whose deleted rows this repository never shows nor changes.
    live_only: ClassVar[bool] = False

    def __init__(self, *, session: AsyncSession, tenant_id: UUID, **kwargs: Any) -> None:
        self.tenant_id = tenant_id
        self._scoped: Select[Any] | None = None
        kwargs.setdefault("statement", _base_statement(self.model_type))
        super().__init__(session=session, **kwargs)

    @property
    def statement(self) -> Select[Any]:
        # Scoped on first use, not in __init__: building the filter costs more than a hot path
        # with a statement of its own (and a repository per request) should pay for nothing.
        if self._scoped is None:
            self._scoped = self.scoped(self._unscoped)
        return self._scoped

    @statement.setter
    def statement(self, statement: Select[Any]) -> None:
        # Whatever base statement is set (advanced-alchemy sets select(model)) is read scoped.
        self._unscoped, self._scoped = statement, None

    def filters(self) -> tuple[ColumnElement[bool], ...]:
        """What every statement of this repository carries: the tenant, and live rows only."""
        tenant = of_tenant(self.model_type, self.tenant_id)
        if self.live_only:
            return tenant, self.model_type.deleted_at.is_(None)  # type: ignore[attr-defined]
        return (tenant,)

    def scoped(self, statement: SelectT) -> SelectT:
        return statement.where(*self.filters())

    def update_rows(self) -> Update:
        """An UPDATE of this repository's rows: the feature adds its conditions and values."""
        return update(self.model_type).where(*self.filters())

    async def get(self, item_id: Any, *args: Any, **kwargs: Any) -> ModelT:
        # The primary key is (tenant_id, id): an id alone names the row of this repository's
        # tenant. advanced-alchemy's update passes the whole key already, an id_attribute a value.
        if not isinstance(item_id, tuple) and kwargs.get("id_attribute") is None:
            item_id = (self.tenant_id, item_id)
        return await super().get(item_id, *args, **kwargs)

    def _own(self, data: ModelT) -> ModelT:
        if data.tenant_id is None:
            data.tenant_id = self.tenant_id
        elif data.tenant_id != self.tenant_id:
            raise NotFoundError("No item found when one was expected")
        return data

    async def add(self, data: ModelT, *args: Any, **kwargs: Any) -> ModelT:
        return await super().add(self._own(data), *args, **kwargs)

    async def add_many(self, data: list[ModelT], *args: Any, **kwargs: Any) -> Sequence[ModelT]:
        return await super().add_many([self._own(item) for item in data], *args, **kwargs)

    async def update(self, data: ModelT, *args: Any, **kwargs: Any) -> ModelT:
        return await super().update(self._own(data), *args, **kwargs)

    async def update_many(self, data: list[ModelT], *args: Any, **kwargs: Any) -> list[ModelT]:
        return await super().update_many([self._own(item) for item in data], *args, **kwargs)

    async def upsert(self, data: ModelT, *args: Any, **kwargs: Any) -> ModelT:
        return await super().upsert(self._own(data), *args, **kwargs)

    async def upsert_many(self, data: list[ModelT], *args: Any, **kwargs: Any) -> list[ModelT]:
        return await super().upsert_many([self._own(item) for item in data], *args, **kwargs)

    async def delete(self, item_id: Any, *args: Any, **kwargs: Any) -> ModelT:
        # get() is scoped: another tenant's id is "not found" before anything is deleted.
        await self.get(item_id)
        return await super().delete(item_id, *args, **kwargs)

    async def delete_many(self, item_ids: list[Any], **kwargs: Any) -> Sequence[ModelT]:
        return await self.delete_where(self.model_type.id.in_(item_ids), **kwargs)

    async def delete_where(self, *filters: Any, **kwargs: Any) -> Sequence[ModelT]:
        return await super().delete_where(
            of_tenant(self.model_type, self.tenant_id), *filters, **kwargs
        )

"""Tenancy's two walls, as the database layer builds them.

Wall 1: repositories that cannot be built without a tenant; they filter every read, update and
delete by ``tenant_id`` and stamp it on every insert, bulk paths included.

Wall 2: PostgreSQL row level security. A session bound to a tenant sets ``app.tenant_id`` with
``SET LOCAL`` in BEGIN's round trip, and again whenever it is bound to another tenant
mid-transaction. ``SET LOCAL``, not ``set_config``: on a Citus coordinator with
``citus.propagate_set_commands = 'local'`` it reaches the workers' shards too. The setting is transaction-local, so a pooled connection never carries
one request's tenant into the next; the policies read an unset or empty setting as "no tenant"
and show nothing.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import date
from functools import cache, cached_property, wraps
from typing import Any, Generic, Literal, TypeVar
from uuid import UUID

import asyncpg
import msgspec
from advanced_alchemy.exceptions import NotFoundError
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import ColumnElement, Engine, Select, Table, bindparam, select
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.exc import MissingGreenlet
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.pool import QueuePool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, FromClause
from sqlalchemy.types import TypeEngine

from tenantry.domain.errors import Unavailable
from tenantry.infrastructure.db.base import TenantOwned
from tenantry.infrastructure.db.citus import CITUS_INSTALLED
from tenantry.infrastructure.db.lost import lost_cause, unavailable

ModelT = TypeVar("ModelT", bound=TenantOwned)
SelectT = TypeVar("SelectT", bound=Select[*tuple[Any, ...]])
T = TypeVar("T")

TENANT_KEY = "tenant_id"
AUTOCOMMIT: Literal["AUTOCOMMIT"] = "AUTOCOMMIT"
# Engines whose every connection is made in autocommit mode (alchemy_config's: the dialect sets
# it once per new connection, which the engine's execution options do not show).
AUTOCOMMIT_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()
# The session's rows written by its commit (see append_at_commit).
APPENDED = "appended_at_commit"
# What the commit raises for a statement run at commit that refused (see run_at_commit).
REFUSALS = "refusals_at_commit"
# The check the session's next transaction begins with (see check_first).
FIRST = "checked_first"
# The check given to check_first or check_later, kept for check_again.
GIVEN_CHECK = "given_check"

Refusal = tuple[str, Callable[[], Exception]]


def of_tenant(entity: Any, tenant_id: UUID | None = None) -> ColumnElement[bool]:
    """The first wall's predicate, written here and nowhere else: the rows of ``entity`` (a
    mapped class, a table or an alias of one) that belong to ``tenant_id``; without one, to the
    tenant passed as the ``tenant_id`` parameter when the statement runs (for statements
    compiled once)."""
    column = entity.c.tenant_id if isinstance(entity, FromClause) else entity.tenant_id
    return column == (bindparam(TENANT_KEY) if tenant_id is None else tenant_id)  # type: ignore[no-any-return]


def bind_tenant(session: AsyncSession, tenant_id: UUID) -> None:
    """Make every later statement of ``session`` run under ``tenant_id``'s row level security."""
    session.info[TENANT_KEY] = str(tenant_id)


class TenantConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg is untyped
    """asyncpg's connection, knowing whether BEGIN's message may carry a statement that reads
    tenant tables (:meth:`TenantTransaction.begin`'s ``first``). A Citus coordinator refuses a
    distributed query in the message that began the transaction and set its tenant; connections
    made otherwise (a test's engine) are not asked and carry none."""

    __slots__ = ("checks_in_begin",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.checks_in_begin = False

    async def learn_server(self) -> None:
        self.checks_in_begin = not await self.fetchval(CITUS_INSTALLED)


class TenantTransaction:
    """The one transaction of a unit of work, on one pooled connection.

    BEGIN and the tenant's ``SET LOCAL`` go in one round trip (the simple query protocol takes
    both); the tenant is set again only when the session is bound to another one. The ORM and
    the statements compiled once (:class:`DriverStatement`) both run in it: the session is
    bound to this connection while it lasts. The connection is checked out in autocommit mode
    so that neither SQLAlchemy nor its asyncpg adapter begins a transaction of its own: this
    one is begun, committed and rolled back here, on the driver.
    """

    KEY = "tenant_transaction"

    def __init__(self, connection: AsyncConnection, driver: asyncpg.Connection) -> None:
        self.connection = connection
        self.driver = driver
        self.tenant: str | None = None
        # Whether BEGIN's round trip carried a statement (begin's ``first``) that held.
        self.checked = False

    @classmethod
    async def checkout(cls, engine: AsyncEngine) -> TenantTransaction:
        """A pooled connection, no transaction begun on it yet."""
        connection = await _pooled(engine)
        if connection.sync_engine not in AUTOCOMMIT_ENGINES:
            # An engine not made by alchemy_config() (a test's, say): one more step, same end.
            await connection.execution_options(isolation_level=AUTOCOMMIT)
        # The pooled connection is at hand once checked out: no greenlet hop to reach it.
        pooled = connection.sync_connection.connection  # type: ignore[union-attr]
        return cls(connection, pooled.driver_connection)

    @classmethod
    async def begin(
        cls, engine: AsyncEngine, tenant: str | None, *, first: str | None = None
    ) -> TenantTransaction:
        """``first``: a statement of literals run in BEGIN's round trip, after the tenant is
        set, where the connection allows it (``checked`` says whether it ran); its result is
        not read: it answers by succeeding or raising. Should it raise, the transaction is
        rolled back and the connection given back before the error goes on."""
        current = await cls.checkout(engine)
        await current._start(tenant, first)
        return current

    @classmethod
    async def commit_alone(
        cls, engine: AsyncEngine, tenant: str | None, writes: Sequence[str]
    ) -> None:
        """A transaction of ``writes`` alone (statements of literals, nothing read before them):
        begun, written and committed in one round trip where the connection takes statements in
        BEGIN's message, else in two."""
        current = await cls.checkout(engine)
        if current.checks_in_begin:
            await current.end(commit=True, appended=[_begin_sql(tenant), *writes])
        else:
            await current._start(tenant)
            await current.end(commit=True, appended=writes)

    async def _start(self, tenant: str | None, first: str | None = None) -> None:
        begin = _begin_sql(tenant)
        if first is not None and self.checks_in_begin:
            begin, self.checked = f"{begin}; {first}", True
        try:
            await self.run(self.driver.execute(begin))
        except asyncpg.PostgresError:
            await self.end(commit=False)
            raise
        self.tenant = tenant

    @property
    def checks_in_begin(self) -> bool:
        return bool(getattr(self.driver, "checks_in_begin", False))

    async def bind(self, tenant: str) -> None:
        """Rebound to another tenant mid-transaction."""
        await self.run(self.driver.execute(_set_tenant_sql(UUID(tenant))))
        self.tenant = tenant

    async def run(self, operation: Awaitable[T]) -> T:
        """Await a driver operation; a lost connection is discarded and becomes a 503."""
        try:
            return await operation
        except asyncpg.QueryCanceledError as error:
            raise Unavailable("database statement timed out") from error
        except BaseException as error:
            if lost_cause(error) is None and not self.driver.is_closed():
                raise
            # What SQLAlchemy does for its own statements: the connection is discarded, not
            # rolled back and returned to the pool.
            await self.connection.invalidate(error)
            raise unavailable(error) from error

    async def end(self, *, commit: bool, appended: Sequence[str] = ()) -> None:
        """Commit or roll back, then give the connection back to the pool. ``appended``: the
        statements of :func:`append_at_commit`, sent in the commit's round trip, before it."""
        try:
            if not self.connection.invalidated:
                ending = "; ".join([*appended, "COMMIT"]) if commit else "ROLLBACK"
                await self.run(self.driver.execute(ending))
        except Unavailable:
            if commit:  # its outcome is unknown
                raise
        except asyncpg.PostgresError:
            # Answered: by the commit (a deferred constraint, say), which ended the transaction,
            # or by an appended row, which left it aborted, to be ended before the connection
            # is pooled again.
            if self.driver.is_in_transaction():
                await self.run(self.driver.execute("ROLLBACK"))
            raise
        except BaseException as error:
            # Cancelled mid-answer: what the connection would say next is unknown.
            await self.connection.invalidate(error)
            raise
        finally:
            await _give_back(self.connection)


async def _pooled(engine: AsyncEngine) -> AsyncConnection:
    """A connection of ``engine``'s pool. One lying idle in the pool of an engine made by
    alchemy_config() is taken at once: SQLAlchemy's asyncio checkout runs the pool's in a
    greenlet, in case it has to wait or connect, which costs a unit of work 25 µs of CPU, a
    twentieth of a small read (bench/README.md, tenth round). A checkout that has to connect
    after all (a connection to recycle or replace) is refused by database.connect before any
    I/O, leaving the pool as a failed connect does, and is done again in the greenlet."""
    sync_engine = engine.sync_engine
    pool = _own_pool(sync_engine)
    if pool is not None and pool.checkedin():
        try:
            return AsyncConnection(engine, sync_engine.connect())
        except MissingGreenlet:
            pass
    return await engine.connect()


def _own_pool(engine: Engine) -> QueuePool | None:
    """The pool of an engine made by alchemy_config(), which _pooled and _give_back use without
    a greenlet where that needs no I/O; None for any other engine's."""
    pool = engine.pool
    return pool if engine in AUTOCOMMIT_ENGINES and isinstance(pool, QueuePool) else None


async def _give_back(connection: AsyncConnection) -> None:
    """Return ``connection`` to its pool, at once where that needs no I/O, as with _pooled: an
    engine made by alchemy_config() (autocommit, so its reset rolls nothing back: the adapter
    never began a transaction, and TenantTransaction ended its own), a connection still valid,
    and a pool holding no more connections than its size (so the connection goes back to the
    queue rather than being closed)."""
    sync = connection.sync_connection
    pool = _own_pool(connection.sync_engine)
    if sync is not None and not sync.invalidated and pool is not None and pool.overflow() <= 0:
        sync.close()
    else:
        await connection.close()


def _begin_sql(tenant: str | None) -> str:
    # A UUID's text, checked again: the one value put in SQL by hand.
    return "BEGIN" if tenant is None else f"BEGIN; {_set_tenant_sql(UUID(tenant))}"


def _set_tenant_sql(tenant: UUID) -> str:
    # SET takes no parameter: the value is a UUID's own text, the one value put in SQL by hand.
    return f"SET LOCAL app.tenant_id = '{tenant}'"


def append_at_commit(
    session: AsyncSession, table: Table, tenant_id: UUID, row: Mapping[str, Any]
) -> None:
    """Have ``row`` (every column's value) inserted into ``table`` under ``tenant_id``'s row
    level security by the commit of ``session``'s transaction, in the commit's own round trip:
    a row written with the change it records, at the price of none. A transaction rolled
    back, or whose commit fails, writes none of them; one that fails to write one commits
    nothing."""
    session.info.setdefault(APPENDED, []).append((table, tenant_id, row))


def run_at_commit(
    session: AsyncSession,
    tenant_id: UUID,
    sql: str,
    /,
    *,
    refused: Mapping[str, Callable[[], Exception]] | None = None,
    **values: Any,
) -> None:
    """Have ``sql`` run under ``tenant_id``'s row level security by the commit of ``session``'s
    transaction, in its round trip, as :func:`append_at_commit` does for a row: for a write
    that depends on other rows (``INSERT ... SELECT``). Each ``{name}`` in ``sql`` becomes
    ``values[name]`` as a literal (NULL for None); ``sql`` itself is the caller's constant.
    ``refused``: each SQLSTATE ``sql`` raises to refuse, and the error the commit then raises
    for it (nothing of the transaction is written)."""
    session.info.setdefault(APPENDED, []).append((sql, tenant_id, values))
    if refused:
        session.info.setdefault(REFUSALS, {}).update(refused)


def _appended_sql(
    items: Sequence[tuple[Table | str, UUID, Mapping[str, Any]]], bound: str | None
) -> list[str]:
    """The statements inserting the appended rows, one per table, tenant and set of columns,
    then those run at commit, each under its tenant (set first unless the transaction is
    ``bound`` to it already, as it mostly is).

    The simple query protocol that carries COMMIT takes no parameters, so the values travel as
    literals, which INSERT's VALUES reads as its columns' types. Measured against reading one
    JSON literal with ``jsonb_populate_recordset``, this costs the database about a third less
    per appended row (docs/performance.md)."""
    batches: dict[tuple[Table, UUID, tuple[str, ...]], list[Mapping[str, Any]]] = {}
    runs: list[tuple[UUID, str]] = []
    for target, tenant, values in items:
        if isinstance(target, str):
            runs.append((tenant, sql_literals(target, **values)))
        else:
            batches.setdefault((target, tenant, tuple(values)), []).append(values)
    inserts = []
    for (table, tenant, names), batch in batches.items():
        rows = ", ".join(
            ["(" + ", ".join([_sql_value(row[n]) for n in names]) + ")" for row in batch]
        )
        inserts.append((tenant, f"{_insert_into(table.name, names)} VALUES {rows}"))
    statements = []
    for tenant, statement in [*inserts, *runs]:
        if (tenant_text := str(tenant)) != bound:
            statements.append(_set_tenant_sql(tenant))
            bound = tenant_text
        statements.append(statement)
    return statements


@cache
def _insert_into(table: str, columns: tuple[str, ...]) -> str:
    # Names from the model's table.
    quoted = ", ".join(f'"{name}"' for name in columns)
    return f'INSERT INTO "{table}" ({quoted})'


def _sql_value(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, tuple):
        return "ARRAY[" + ", ".join([_sql_value(item) for item in value]) + "]"
    return _literal(value)


def _literal(value: Any) -> str:
    """``value`` (not None) as an untyped SQL literal: an escape string (``E'...'``), which
    reads the same whatever ``standard_conforming_strings`` says, with backslashes and quotes
    doubled, so nothing in it escapes or ends the quote; NUL, which no PostgreSQL text can
    hold, becomes the escape ``\\000`` that the server refuses, failing the commit."""
    if isinstance(value, UUID):
        # Its 32 hex digits, which the uuid type reads (asyncpg's UUIDs are UUIDs too).
        return f"'{value.hex}'"
    if isinstance(value, date | int | float):
        # Their text holds no quote, backslash or NUL.
        return f"'{value}'"
    # Any other value as its text (a string enumeration's value), escaped all the same.
    text = msgspec.json.encode(value).decode() if isinstance(value, dict | list) else str(value)
    return "E'" + text.replace("\\", "\\\\").replace("'", "''").replace("\x00", "\\000") + "'"


class TenantSession(AsyncSession):
    """The session of every unit of work: its statements, ORM and driver alike, run in one
    :class:`TenantTransaction`, begun on first use and ended by commit, rollback or close."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The engine transactions are begun on; the session's bind is the connection of the
        # current one while it lasts.
        self.engine = self.bind

    async def transaction(self, *, first: str | None = None) -> TenantTransaction:
        """The unit of work's transaction, begun if need be, bound to the session's tenant.
        ``first``: run in BEGIN's round trip when it begins here (see TenantTransaction.begin)."""
        wanted: str | None = self.info.get(TENANT_KEY)
        current: TenantTransaction | None = self.info.get(TenantTransaction.KEY)
        if current is None:
            assert isinstance(self.engine, AsyncEngine), "sessions are bound to the engine"
            pending: tuple[str, Refusal] | None = self.info.get(FIRST)
            if pending is None:
                current = await TenantTransaction.begin(self.engine, wanted, first=first)
            else:
                if first is not None:
                    raise RuntimeError("a transaction begins with one check at most")
                current = await _begin_checked(self.engine, wanted, *pending)
                # Passed: a transaction that failed to begin leaves it for the next one.
                del self.info[FIRST]
            self.info[TenantTransaction.KEY] = current
            # The ORM joins this connection; its own begin and commit are no-ops in autocommit.
            self.bind = current.connection
        elif wanted is not None and current.tenant != wanted:
            await current.bind(wanted)
        return current

    def _has_changes(self) -> bool:
        return bool(self.new or self.dirty or self.deleted)

    async def _end(self, *, commit: bool) -> None:
        appended = self.info.pop(APPENDED, ())
        self.info.pop(REFUSALS, None)
        current: TenantTransaction | None = self.info.pop(TenantTransaction.KEY, None)
        if current is not None:
            try:
                self.bind = self.engine
            finally:
                try:
                    statements = _appended_sql(appended, current.tenant) if commit else ()
                except BaseException:
                    # A row that cannot be written: nothing of the transaction commits.
                    await current.end(commit=False)
                    raise
                await current.end(commit=commit, appended=statements)

    async def commit(self) -> None:
        refusals: dict[str, Callable[[], Exception]] = self.info.pop(REFUSALS, {})
        if (pending := self.info.get(FIRST)) is not None:
            sqlstate, refusal = pending[1]
            refusals = {**refusals, sqlstate: refusal}
        try:
            await self._commit()
        except asyncpg.PostgresError as error:
            if (refusal := refusals.get(error.sqlstate)) is not None:
                if pending is not None and error.sqlstate == pending[1][0]:
                    # The check has run and refused: what the request does next, giving back
                    # what it took, runs without it.
                    self.info.pop(FIRST, None)
                raise refusal() from error
            raise

    async def _commit(self) -> None:
        changes = self._has_changes()
        if not changes and TenantTransaction.KEY not in self.info and APPENDED in self.info:
            # Nothing run before the commit but what it writes: one round trip for it all.
            assert isinstance(self.engine, AsyncEngine), "sessions are bound to the engine"
            tenant: str | None = self.info.get(TENANT_KEY)
            writes = _appended_sql(self.info.pop(APPENDED), tenant)
            if (pending := self.info.get(FIRST)) is not None:
                writes = [pending[0], *writes]
            await TenantTransaction.commit_alone(self.engine, tenant, writes)
            self.info.pop(FIRST, None)
            return
        if changes or self.info.get(APPENDED):
            await self.transaction()
        try:
            # A session that only ran driver statements has nothing for the ORM to flush or
            # commit: spared, its commit is no greenlet hop.
            if changes or self.in_transaction():
                await super().commit()
        except BaseException:
            await self._end(commit=False)
            raise
        await self._end(commit=True)

    async def rollback(self) -> None:
        try:
            if self.in_transaction():  # else nothing to undo, and no greenlet to start for it
                await super().rollback()
        finally:
            await self._end(commit=False)

    async def close(self) -> None:
        try:
            # A session that only ran driver statements holds nothing for the ORM to close:
            # spared, its close is no greenlet hop.
            if self.in_transaction() or self.sync_session.identity_map or self._has_changes():
                await super().close()
        finally:
            await self._end(commit=False)

    async def flush(self, objects: Sequence[Any] | None = None) -> None:
        if self._has_changes():
            await self.transaction()
        await super().flush(objects)

    async def connection(self, *args: Any, **kwargs: Any) -> AsyncConnection:
        await self.transaction()
        return await super().connection(*args, **kwargs)


def _in_transaction(name: str) -> Any:
    method = getattr(AsyncSession, name)

    @wraps(method)
    async def run(self: TenantSession, *args: Any, **kwargs: Any) -> Any:
        await self.transaction()
        return await method(self, *args, **kwargs)

    return run


# Every other way the ORM reaches the database: each runs in the unit of work's transaction.
for _name in (
    "delete",
    "execute",
    "get",
    "get_one",
    "merge",
    "refresh",
    "run_sync",
    "scalar",
    "scalars",
    "stream",
    "stream_scalars",
):
    setattr(TenantSession, _name, _in_transaction(_name))


@cache
def _base_statement(model: type[TenantOwned]) -> Select[Any]:
    # Statements are immutable, so one per model serves every repository: building select(model)
    # anew was most of the cost of the repositories each request constructs.
    return select(model)


# SQLAlchemy's dialect classes carry no annotations.
_ASYNCPG = asyncpg_dialect.dialect()  # type: ignore[no-untyped-call]
# A positional parameter of a statement compiled for asyncpg ($1, $2 ...).
_POSITIONAL = re.compile(r"\$(\d+)")


class DriverStatement:
    """A Core statement compiled once for asyncpg and run on the driver connection of the
    session's transaction: for the hot statements, whose SQLAlchemy per-statement work (the
    ORM session, greenlet hops, result wrapping) cost several times the round trip itself.
    The statement stays the one source of its SQL; rows come back as asyncpg records."""

    def __init__(
        self, statement: ClauseElement, *, placeholders: Mapping[Any, str] | None = None
    ) -> None:
        """``placeholders`` name the values that stand for an argument in a statement built
        by code that takes values, not parameters (advanced-alchemy's filters): a literal
        equal to one of them is asked for under its name at each run."""
        compiled = statement.compile(dialect=_ASYNCPG)
        assert isinstance(compiled, SQLCompiler)
        self.sql = str(compiled)
        stand_ins = placeholders or {}
        # Literals of the statement (a status value, say) are fixed; bindparam()s are asked
        # for. Each goes through its type's processing, as SQLAlchemy would (JSON to text...).
        self._arguments: list[tuple[str, bool, Any, Callable[[Any], Any] | None]] = []
        for bound in compiled.positiontup or ():
            name, fixed = bound, compiled.params[bound]
            asked = compiled.binds[bound].value is None
            if not asked and _hashable(fixed) and fixed in stand_ins:
                name, asked = stand_ins[fixed], True
            self._arguments.append((name, asked, fixed, _processor(compiled.binds[bound].type)))

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        found = []
        for name, asked, fixed, process in self._arguments:
            value = values[name] if asked else fixed
            found.append(value if process is None or value is None else process(value))
        return found

    async def fetch_row(self, session: AsyncSession, **values: Any) -> asyncpg.Record | None:
        transaction = await session_transaction(session)
        return await transaction.run(transaction.driver.fetchrow(self.sql, *self.arguments(values)))

    async def fetch(self, session: AsyncSession, **values: Any) -> list[asyncpg.Record]:
        transaction = await session_transaction(session)
        return await transaction.run(transaction.driver.fetch(self.sql, *self.arguments(values)))

    async def fetch_value(self, session: AsyncSession, **values: Any) -> Any:
        transaction = await session_transaction(session)
        return await transaction.run(transaction.driver.fetchval(self.sql, *self.arguments(values)))

    def run_at_commit(self, session: AsyncSession, tenant_id: UUID, /, **values: Any) -> None:
        """The statement run by the commit of ``session``'s transaction, in its round trip
        (:func:`run_at_commit`), each argument a literal: for a write whose answer nobody reads,
        bound to be made with what the transaction commits."""
        run_at_commit(
            session,
            tenant_id,
            self._at_commit,
            **{f"p{number}": value for number, value in enumerate(self.arguments(values), 1)},
        )

    @cached_property
    def _at_commit(self) -> str:
        # $n becomes {pn}, which sql_literals fills; the statement's own braces are kept.
        escaped = self.sql.replace("{", "{{").replace("}", "}}")
        return _POSITIONAL.sub(lambda found: "{p" + found[1] + "}", escaped)

    async def fetch_row_alone(self, session: AsyncSession, **values: Any) -> asyncpg.Record | None:
        """The statement run alone, in the implicit transaction of one statement, on a
        connection of the session's engine held for it only: one round trip, and no connection
        kept. Only for a statement that reads no tenant's rows (the platform's tables) or sets
        its tenant itself (a function doing ``SET LOCAL``): no tenant is set for it, and the
        session's transaction is not used."""
        return await self._alone(session, "fetchrow", values)

    async def fetch_value_alone(self, session: AsyncSession, **values: Any) -> Any:
        """As :meth:`fetch_row_alone`, the first column's value."""
        return await self._alone(session, "fetchval", values)

    async def _alone(self, session: AsyncSession, fetch: str, values: Mapping[str, Any]) -> Any:
        assert isinstance(session, TenantSession), "units of work run on TenantSession"
        if FIRST in session.info:
            # Its own connection, outside the session's transactions, would pass the check by.
            raise RuntimeError("a check is pending for the session's next transaction")
        assert isinstance(session.engine, AsyncEngine), "sessions are bound to the engine"
        alone = await TenantTransaction.checkout(session.engine)
        try:
            run = getattr(alone.driver, fetch)
            return await alone.run(run(self.sql, *self.arguments(values)))
        finally:
            await _give_back(alone.connection)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _processor(kind: TypeEngine[Any]) -> Callable[[Any], Any] | None:
    """How a value of ``kind`` is sent: as SQLAlchemy would, except UUIDs, which asyncpg takes
    as they are (SQLAlchemy's UUID type would make text of them for the server to parse)."""
    try:
        if kind.python_type is UUID:
            return None
    except NotImplementedError:
        pass
    return kind.dialect_impl(_ASYNCPG).bind_processor(_ASYNCPG)


async def session_transaction(session: AsyncSession) -> TenantTransaction:
    assert isinstance(session, TenantSession), "units of work run on TenantSession"
    return await session.transaction()


def check_first(session: AsyncSession, check: str, /, *, refused: Refusal) -> None:
    """Have the next transaction of ``session`` begin with ``check`` (a statement of literals,
    see :func:`sql_literals`, that holds or raises), before any statement of its own: in
    BEGIN's round trip, or in the commit's when nothing runs before it, else (Citus) as the
    transaction's first statement. ``refused``: the SQLSTATE ``check`` raises to refuse, and
    the error the transaction then raises instead of beginning (nothing of it is written). It
    stays pending until a transaction has begun with it, or committed when it only wrote at
    its commit. For a check that must not hold a connection now, as none may wait on a
    client's body."""
    assert isinstance(session, TenantSession), "units of work run on TenantSession"
    if TenantTransaction.KEY in session.info:
        # Not asserted: a check that never runs must not pass silently (python -O).
        raise RuntimeError("the session's transaction has begun: nothing would run the check")
    session.info[FIRST] = session.info[GIVEN_CHECK] = (check, refused)


def check_later(session: AsyncSession, check: str, /, *, refused: Refusal) -> None:
    """Give ``session`` the check :func:`check_again` runs, for a request whose credentials a
    transaction of its own confirmed already (an API key's read): no transaction begins with it
    until a write asks for it again."""
    assert isinstance(session, TenantSession), "units of work run on TenantSession"
    session.info[GIVEN_CHECK] = (check, refused)


def check_again(session: AsyncSession) -> None:
    """Have the next transaction of ``session`` begin with the check :func:`check_first` (or
    :func:`check_later`) was given: for a write that must not stand on what an earlier transaction
    confirmed, as an upload's row written after its bytes, minutes after its first
    transaction. Nothing when no check was given, or one is pending already."""
    assert isinstance(session, TenantSession), "units of work run on TenantSession"
    given: tuple[str, Refusal] | None = session.info.get(GIVEN_CHECK)
    if given is None or FIRST in session.info:
        return
    if TenantTransaction.KEY in session.info:
        raise RuntimeError("the session's transaction has begun: nothing would run the check")
    session.info[FIRST] = given


async def _begin_checked(
    engine: AsyncEngine, tenant: str | None, check: str, refused: Refusal
) -> TenantTransaction:
    sqlstate, refusal = refused
    try:
        current = await TenantTransaction.begin(engine, tenant, first=check)
        if not current.checked:
            try:
                await current.run(current.driver.execute(check))
            except BaseException:
                await current.end(commit=False)
                raise
    except asyncpg.PostgresError as error:
        if error.sqlstate == sqlstate:
            raise refusal() from error
        raise
    return current


async def begin_with_check(session: AsyncSession, check: str, /, *, refused: str) -> bool:
    """Begin ``session``'s transaction with ``check`` (a statement of literals, see
    :func:`sql_literals`) in BEGIN's round trip: a statement that holds or raises ``refused``
    (a SQLSTATE), where its holding spares the read that would follow. Whether it held; not
    when the transaction had begun already or the connection carries no check in BEGIN's
    message (nothing is run), nor when it was refused (no transaction is left: the next
    statement begins one)."""
    assert isinstance(session, TenantSession), "units of work run on TenantSession"
    if TenantTransaction.KEY in session.info:
        return False
    try:
        return (await session.transaction(first=check)).checked
    except asyncpg.PostgresError as error:
        if error.sqlstate != refused:
            raise
        return False


def sql_literals(sql: str, /, **values: Any) -> str:
    """``sql`` (the caller's constant) with each ``{name}`` replaced by ``values[name]`` as a
    literal (NULL for None; a tuple as an ARRAY of its items' literals, for the caller to
    cast): for the simple query protocol, which takes no parameters."""
    return sql.format(**{name: _sql_value(value) for name, value in values.items()})


class TenantScopedRepository(SQLAlchemyAsyncRepository[ModelT], Generic[ModelT]):
    """advanced-alchemy's repository, confined to one tenant on every path (a feature's
    ``TenantRows.orm``).

    The base ``statement`` scopes get, list, count and exists; the bulk paths build their own
    statements and ignore it, so each is overridden here.
    """

    # A separate count query: count(*) OVER () slows down on large tables.
    count_with_window_function = False

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

    def scoped(self, statement: SelectT) -> SelectT:
        return statement.where(of_tenant(self.model_type, self.tenant_id))

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

"""Engine and session configuration, shared by the API, workers and CLI."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import asyncpg
from advanced_alchemy.extensions.litestar import (
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
)
from sqlalchemy import event, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DisconnectionError, MissingGreenlet
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.util.concurrency import in_greenlet

from tenantry.config import Settings
from tenantry.domain.errors import Unavailable
from tenantry.infrastructure.db.audit import TRAIL_OFF
from tenantry.infrastructure.db.features import metadata
from tenantry.infrastructure.db.lost import LOST, lost_cause
from tenantry.infrastructure.db.rls import MAINTENANCE_ROLE
from tenantry.infrastructure.db.tenancy import (
    AUTOCOMMIT,
    AUTOCOMMIT_ENGINES,
    TenantConnection,
    TenantSession,
)

# The server's own cancellation (a clear SQLSTATE) gets this long to arrive before the driver
# stops waiting for an answer.
STATEMENT_TIMEOUT_GRACE = 2.0


def connect(*args: Any, **kwargs: Any) -> Coroutine[Any, Any, asyncpg.Connection]:
    """asyncpg's connect, with "the server cannot be reached" as one domain error (SQLAlchemy
    passes connect-time OSErrors through unwrapped, indistinguishable from a disk error); the
    connection knows what its server takes (TenantConnection).

    Outside SQLAlchemy's greenlet (a checkout taken at once, see ``tenancy._pooled``) it
    refuses before any coroutine is made: SQLAlchemy would close that one unawaited, with a
    RuntimeWarning, and the checkout is done again in the greenlet."""
    if not in_greenlet():
        raise MissingGreenlet("a new connection is made in SQLAlchemy's greenlet")
    return _connect(*args, **kwargs)


async def _connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    try:
        connection: TenantConnection = await asyncpg.connect(
            *args, connection_class=TenantConnection, **kwargs
        )
        try:
            await connection.learn_server()
        except BaseException:
            connection.terminate()
            raise
    except LOST as error:
        raise Unavailable(f"database unreachable ({type(error).__name__})") from error
    return connection


def alchemy_config(
    settings: Settings, *, password: Callable[[], Awaitable[str | None]] | None = None
) -> SQLAlchemyAsyncConfig:
    """``password``, when given, is asked for at each new connection (asyncpg awaits it), so a
    password rotated in the secret store reaches the pool without a restart."""
    connect_args: dict[str, Any] = {
        "timeout": settings.db_connect_timeout,
        "command_timeout": settings.db_statement_timeout + STATEMENT_TIMEOUT_GRACE,
        "server_settings": {
            "application_name": "tenantry",
            "statement_timeout": str(round(settings.db_statement_timeout * 1000)),
            # A Citus node hides its shards from pg_class by a filter that makes asyncpg's type
            # introspection (a new connection's first use of a type such as varchar[]) take
            # 0.3-1.8 s instead of 15 ms. Shown them, the app leaves them out where it lists
            # tables (catalog.py); one node keeps the setting as an unused placeholder.
            "citus.show_shards_for_app_name_prefixes": "*",
        },
        # The asyncpg dialect pops this and calls it instead of asyncpg.connect.
        "async_creator_fn": connect,
    }
    if password is not None:
        connect_args["password"] = password
    config = SQLAlchemyAsyncConfig(
        connection_string=settings.async_database_url,
        metadata=metadata,
        create_all=False,
        # Errors are mapped once, in presentation/errors.py.
        set_default_exception_handler=False,
        session_config=AsyncSessionConfig(
            expire_on_commit=False,
            autoflush=False,
            class_=TenantSession,
            info={} if settings.audit_trail else {TRAIL_OFF: True},
        ),
        engine_config=EngineConfig(
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout,
            # Not pool_pre_ping: asyncpg pings as BEGIN, ";", ROLLBACK, three round trips per
            # checkout (~15% of a small read). _replace_closed does the job for free.
            pool_pre_ping=False,
            pool_recycle=1800,
            echo=settings.log_sql,
            # Statement parameters hold password hashes and token digests: never in errors or logs.
            hide_parameters=True,
            connect_args=connect_args,
            # Units of work begin, commit and roll back their transaction themselves
            # (TenantTransaction): neither the ORM nor SQLAlchemy's asyncpg adapter may begin one
            # of their own. Set on the pool, not per checkout, where it would cost a step each.
            isolation_level=AUTOCOMMIT,
        ),
    )
    engine = config.get_engine()
    AUTOCOMMIT_ENGINES.add(engine.sync_engine)
    event.listen(engine.sync_engine, "checkout", _replace_closed)
    event.listen(engine.sync_engine, "handle_error", _lost_is_disconnect)
    return config


def _lost_is_disconnect(context: ExceptionContext) -> None:
    """SQLAlchemy discards a connection it sees as disconnected; what counts as lost is
    decided once, in lost.py (asyncpg's InternalClientError, say: a protocol state broken by
    the server going down), so the request gets a 503, not a 500 and a poisoned pool."""
    if lost_cause(context.original_exception) is not None:
        context.is_disconnect = True


def _replace_closed(_: Any, record: ConnectionPoolEntry, __: PoolProxiedConnection) -> None:
    """A server that restarts or ends a backend closes the socket; asyncpg sees that while the
    connection idles in the pool. Refusing it here makes the pool connect afresh, so a quiet
    restart fails no request, at no round trip. (A connection that dies mid-request is a 503
    and invalidates the pool.)"""
    driver = record.driver_connection
    if driver is None:
        return
    if driver.is_closed():
        raise DisconnectionError("the server closed this pooled connection")
    if driver.is_in_transaction():
        # A unit of work that never ended (its session dropped unclosed): its transaction, and
        # the tenant set in it, must not reach the next one.
        raise DisconnectionError("a pooled connection came back in a transaction")


async def role_problems(engine: AsyncEngine) -> list[str]:
    """Why the connected role would bypass row level security, if it would."""
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "select r.rolsuper, r.rolbypassrls, "
                    "(select string_agg(tablename, ', ' order by tablename) from pg_tables "
                    " where schemaname = current_schema() and tableowner = current_user), "
                    # The maintenance role's policy shows it every tenant's unfinished tasks.
                    "exists (select from pg_roles m where m.rolname = :maintenance "
                    " and pg_has_role(r.oid, m.oid, 'MEMBER')) "
                    "from pg_roles r where r.rolname = current_user"
                ),
                {"maintenance": MAINTENANCE_ROLE},
            )
        ).one()
    superuser, bypass, owned, maintenance = row
    problems = []
    if superuser:
        problems.append("is a superuser")
    if bypass:
        problems.append("has BYPASSRLS")
    if owned:
        problems.append(f"owns tables ({owned})")
    if maintenance and not superuser:  # a superuser is a member of every role
        problems.append(f"is a member of {MAINTENANCE_ROLE}")
    return problems


async def ping(engine: AsyncEngine) -> float:
    """Run one round trip; return its latency in milliseconds."""
    started = time.perf_counter()
    async with engine.connect() as connection:
        await connection.execute(text("select 1"))
    return (time.perf_counter() - started) * 1000

"""What a lost database connection is, decided in one place: when connecting, for the ORM's
statements (SQLAlchemy's ``handle_error``) and for the statements run on the driver."""

from __future__ import annotations

import asyncpg

from tenantry.domain.errors import Unavailable

# A server that is down, starting, stopping, full or gone mid-answer: the connection is of no
# further use and the request is worth retrying, unlike a wrong password or a bad statement.
LOST = (
    OSError,  # refused, no socket, no answer within the statement timeout (TimeoutError)
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, e.g. closed mid-handshake
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,  # the backend was terminated
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InternalClientError,  # a protocol state broken by a server going down
    asyncpg.ConnectionDoesNotExistError,
)


def lost_cause(error: BaseException | None) -> BaseException | None:
    """The lost-connection error behind ``error``, if any: SQLAlchemy and advanced-alchemy
    re-raise the driver's errors as their own, from them."""
    while error is not None:
        if isinstance(error, LOST):
            return error
        error = error.__cause__
    return None


def unavailable(error: BaseException) -> Unavailable:
    return Unavailable(f"database lost ({type(error).__name__})")

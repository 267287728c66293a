"""One mapping from errors to RFC 9457 ``application/problem+json`` responses."""

from __future__ import annotations

import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, ClassVar

import msgspec
import structlog
from advanced_alchemy.exceptions import AdvancedAlchemyError
from litestar import Request, Response
from litestar.exceptions import HTTPException, InternalServerException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.types import ExceptionHandlersMap
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from tenantry.domain.errors import (
    INVALID_CREDENTIALS,
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    StaleVersion,
    Unauthenticated,
    Unavailable,
)
from tenantry.domain.files import StorageFull, TooLarge, UnsupportedType
from tenantry.domain.secrets import SecretNotFound, SecretsUnavailable
from tenantry.domain.tasks import TaskFinished
from tenantry.presentation.middleware import client_gone, request_id_of

PROBLEM_JSON = "application/problem+json"
_NAMED_FIELD = re.compile(r"(?:missing required|unknown) field `([^`]+)`")
# character_not_in_repertoire (a NUL in text), untranslatable_character (one in JSON).
_UNSTORABLE_SQLSTATES = frozenset({"22021", "22P05"})
# statement_timeout fired (or the query was cancelled otherwise).
QUERY_CANCELED = "57014"
FOREIGN_KEY_VIOLATION = "23503"
# The SQLSTATE class of disk_full, out_of_memory, too_many_connections and the like.
INSUFFICIENT_RESOURCES = "53"
# The schema's keys to a user (a row's creator or owner, a session's or an API key's user) and
# to a tenant, as the metadata's naming convention calls them. A Citus coordinator relays a
# worker's error without its constraint field, the name (with the shard's id after it) only in
# its message.
_KEY_TO_THE_CALLER = re.compile(r"\bfk_\w+_(?:users|tenants)(?:_\d+)?\b")
UNSTORABLE_INPUT = "The request contains a character that is not accepted (such as NUL)."
TOO_DEEP = "The request body is nested too deeply."
CUT_OFF = "The client went away before the request's body was complete."

log = structlog.stdlib.get_logger("tenantry.errors")

DOMAIN_STATUS: dict[type[DomainError], int] = {
    NotFound: 404,
    Conflict: 409,
    Forbidden: 403,
    Invalid: 422,
    Unauthenticated: 401,
    RateLimited: 429,
    StaleVersion: 412,
    TooLarge: 413,
    UnsupportedType: 415,
    StorageFull: 507,
    TaskFinished: 409,
}


class FieldError(msgspec.Struct):
    """What is wrong with one field of the request."""

    example: ClassVar[dict[str, Any]] = {"field": "name", "message": "must not be blank"}

    field: str
    message: str


class Problem(msgspec.Struct, omit_defaults=True):
    """The body of every error response."""

    example: ClassVar[dict[str, Any]] = {
        "type": "urn:tenantry:problem:unprocessable-entity",
        "title": "Unprocessable Entity",
        "status": 422,
        "detail": "The project is not valid.",
        "instance": "/api/v1/projects",
        "request_id": "6f1c0e8a9b2d4c7e8f0a1b2c3d4e5f60",
        "errors": [{"field": "name", "message": "must not be blank"}],
    }

    type: str
    title: str
    status: int
    detail: str
    instance: str
    request_id: str
    errors: list[FieldError] = msgspec.field(default_factory=list)


# What a route with path, query or header parameters may answer before its handler runs: one
# it cannot read (400), one that breaks the schema (422). Listing 400 also replaces the 400
# Litestar documents for such routes in its own shape, which is not what they send.
PARAMETER_ERRORS = (400, 422)
# What a route reading a JSON body may answer before its handler runs: the above, a body over
# the size limit, and one sent as another media type than JSON.
BODY_ERRORS = (*PARAMETER_ERRORS, 413, 415)


class ProblemSpec(ResponseSpec):
    """A problem+json response in the spec. Shared, not copied: Litestar deep-copies each
    controller's handlers for every app, their responses with them (3 % of an app's creation),
    and never changes a response once made."""

    def __deepcopy__(self, memo: dict[int, Any]) -> ProblemSpec:
        return self


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """The OpenAPI entries of the errors a route answers, each a problem+json body."""
    return {
        status: ProblemSpec(
            Problem,
            description=HTTPStatus(status).phrase,
            media_type=PROBLEM_JSON,
            generate_examples=False,
        )
        for status in sorted(statuses)
    }


def problem_type(status: int) -> str:
    return "urn:tenantry:problem:" + HTTPStatus(status).phrase.lower().replace(" ", "-").replace(
        "'", ""
    )


def problem_response(
    request: Request[Any, Any, Any],
    status: int,
    detail: str,
    *,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Problem]:
    return Response(
        Problem(
            type=problem_type(status),
            title=HTTPStatus(status).phrase,
            status=status,
            detail=detail,
            instance=request.url.path,
            request_id=request_id_of(request.scope),
            errors=errors or [],
        ),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _validation_errors(extra: Any) -> list[FieldError]:
    if not isinstance(extra, list):
        return []
    found = []
    for item in extra:
        if isinstance(item, dict):
            message = str(item.get("message", "is not valid"))
            # msgspec names a missing or unknown field only in its message; the key is "data".
            named = _NAMED_FIELD.search(message)
            key = named.group(1) if named else str(item.get("key") or item.get("source") or "body")
            found.append(FieldError(field=key, message=message))
    return found


def handle_validation(
    request: Request[Any, Any, Any], exc: ValidationException
) -> Response[Problem]:
    # Field errors mean well-formed input that breaks the schema (422); without them the input
    # could not be read at all (400).
    errors = _validation_errors(exc.extra)
    if errors:
        return problem_response(request, 422, "The request is not valid.", errors=errors)
    return problem_response(request, 400, _safe_detail(exc.detail, 400))


def handle_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    status = exc.status_code
    if isinstance(exc, InternalServerException) and client_gone(request.scope):
        # No one is left to read the answer: what matters is that the log and the metrics
        # count it as the client's doing (its upload, if any, has left nothing behind).
        log.info("client disconnected", path=request.url.path, method=request.method)
        return problem_response(request, 400, CUT_OFF)
    if status >= 500:
        return handle_unexpected(request, exc)
    return problem_response(request, status, _safe_detail(exc.detail, status), headers=exc.headers)


def handle_domain(request: Request[Any, Any, Any], exc: DomainError) -> Response[Problem]:
    status = next(code for kind, code in DOMAIN_STATUS.items() if isinstance(exc, kind))
    errors = [FieldError(field=name, message=message) for name, message in exc.fields.items()]
    headers = None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    elif isinstance(exc, Unauthenticated):
        headers = {"WWW-Authenticate": 'Bearer realm="tenantry"'}
    return problem_response(request, status, exc.detail, errors=errors, headers=headers)


def handle_secrets(request: Request[Any, Any, Any], exc: DomainError) -> Response[Problem]:
    return _unavailable(request, "secret store unavailable", exc.detail)


def handle_unavailable(request: Request[Any, Any, Any], exc: Unavailable) -> Response[Problem]:
    return _unavailable(request, "dependency unavailable", exc.detail)


def handle_storage_full(request: Request[Any, Any, Any], exc: StorageFull) -> Response[Problem]:
    # The operator's to act on, so logged as an error; the cause names the store's path, which
    # the client does not learn.
    log.error("file store full", error=str(exc.__cause__ or exc))
    return handle_domain(request, exc)


def _unavailable(request: Request[Any, Any, Any], event: str, cause: str) -> Response[Problem]:
    # The cause may name a server's address: it goes to the log, the client learns only 503.
    log.warning(event, error=cause)
    return problem_response(
        request,
        503,
        "A dependency is unavailable; try again shortly.",
        headers={"Retry-After": "5"},
    )


def _lost_database(exc: BaseException) -> BaseException | None:
    """A connection that died under the request, none free within the pool timeout, or a
    statement past the statement timeout (cancelled by the server, or no answer in time).
    advanced-alchemy's repositories wrap these (a dead connection even as an IntegrityError),
    hence the walk down the causes."""
    cause: BaseException | None = exc
    while cause is not None:
        if (
            isinstance(cause, PoolTimeout | TimeoutError)
            or (isinstance(cause, DBAPIError) and cause.connection_invalidated)
            or getattr(cause, "sqlstate", None) == QUERY_CANCELED
        ):
            return cause
        cause = cause.__cause__
    return None


def handle_database(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    if (lost := _lost_database(exc)) is not None:
        return handle_unavailable(request, Unavailable(f"database lost ({type(lost).__name__})"))
    return handle_unexpected(request, exc)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    if _in_chain(exc, _unstorable_input):
        return problem_response(request, 422, UNSTORABLE_INPUT)
    if _in_chain(exc, _caller_deleted):
        return handle_domain(request, Unauthenticated(INVALID_CREDENTIALS))
    if (starved := _in_chain(exc, _database_out_of_resources)) is not None:
        return handle_unavailable(
            request, Unavailable(f"database out of resources ({_sqlstate(starved)}: {starved})")
        )
    # msgspec gives up on JSON nested deeper than the interpreter's recursion limit: a request
    # body that cannot be read, not a fault of ours.
    if isinstance(exc, RecursionError) and "while deserializing" in str(exc):
        return problem_response(request, 400, TOO_DEEP)
    status = exc.status_code if isinstance(exc, HTTPException) and exc.status_code >= 500 else 500
    log.exception("unhandled error", path=request.url.path, method=request.method)
    return problem_response(
        request,
        status,
        "An unexpected error occurred. Quote the request id to support.",
    )


def _in_chain(exc: BaseException, found: Callable[[BaseException], bool]) -> BaseException | None:
    """The first exception in ``exc``'s chain for which ``found`` holds: database errors are
    told by their SQLSTATE there, so no driver class is named here."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if found(current):
            return current
        linked = (current.__cause__, current.__context__, getattr(current, "orig", None))
        pending.extend(link for link in linked if isinstance(link, BaseException))
    return None


def _unstorable_input(error: BaseException) -> bool:
    """PostgreSQL refused a character of the client's input (a NUL in text or JSON); the other
    data errors (a number out of range, say) are kept out by the request schemas."""
    return getattr(error, "sqlstate", None) in _UNSTORABLE_SQLSTATES


def _database_out_of_resources(error: BaseException) -> bool:
    """PostgreSQL could not do the work for want of resources (class 53: its disk full, out
    of memory, a configured limit): the server's to recover, so the client may try again, as
    after an outage."""
    return _sqlstate(error).startswith(INSUFFICIENT_RESOURCES)


def _sqlstate(error: BaseException) -> str:
    return str(getattr(error, "sqlstate", None) or "")


def _caller_deleted(error: BaseException) -> bool:
    """A row's key to a user or a tenant failed: the user was deleted, or the tenant erased,
    while the request ran (the delete holds the user's row, so a write that names it after
    waits, then finds it gone). The API writes no user or tenant id but the caller's into a
    row, so the caller is gone: their credentials no longer hold. (A superuser's action on a
    tenant whose erasure ends at that moment is answered the same: rare, and no 500.)"""
    if getattr(error, "sqlstate", None) != FOREIGN_KEY_VIOLATION:
        return False
    constraint = getattr(error, "constraint_name", None) or getattr(error, "message", "")
    return bool(_KEY_TO_THE_CALLER.search(str(constraint)))


def _safe_detail(detail: str, status: int) -> str:
    # Litestar's default detail for a bare status is the phrase itself; keep it short and plain.
    return detail if detail and len(detail) <= 500 else HTTPStatus(status).phrase


exception_handlers: ExceptionHandlersMap = {
    ValidationException: handle_validation,
    HTTPException: handle_http,
    DomainError: handle_domain,
    SecretNotFound: handle_secrets,
    SecretsUnavailable: handle_secrets,
    Unavailable: handle_unavailable,
    StorageFull: handle_storage_full,
    SQLAlchemyError: handle_database,
    # The driver's own timeout reaches us unwrapped.
    TimeoutError: handle_database,
    AdvancedAlchemyError: handle_database,
    Exception: handle_unexpected,
}

"""One mapping from errors to RFC 9457 ``application/problem+json`` responses."""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from tenantry.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    StaleVersion,
    Unauthenticated,
)
from tenantry.domain.files import TooLarge, UnsupportedType
from tenantry.domain.tasks import TaskFinished
from tenantry.presentation.middleware import request_id_of

PROBLEM_JSON = "application/problem+json"
_NAMED_FIELD = re.compile(r"(?:missing required|unknown) field `([^`]+)`")

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
    TaskFinished: 409,
}


class FieldError(msgspec.Struct):
    field: str
    message: str


class Problem(msgspec.Struct, omit_defaults=True):
    """The body of every error response."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    request_id: str
    errors: list[FieldError] = msgspec.field(default_factory=list)


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


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    status = exc.status_code if isinstance(exc, HTTPException) and exc.status_code >= 500 else 500
    log.exception("unhandled error", path=request.url.path, method=request.method)
    return problem_response(
        request,
        status,
        "An unexpected error occurred. Quote the request id to support.",
    )


def _safe_detail(detail: str, status: int) -> str:
    # Litestar's default detail for a bare status is the phrase itself; keep it short and plain.
    return detail if detail and len(detail) <= 500 else HTTPStatus(status).phrase


exception_handlers: ExceptionHandlersMap = {
    ValidationException: handle_validation,
    HTTPException: handle_http,
    DomainError: handle_domain,
    Exception: handle_unexpected,
}

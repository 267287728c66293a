"""Optimistic concurrency over HTTP: ``ETag`` on reads, ``If-Match`` (or ``version``) on writes."""

from __future__ import annotations

import re
from typing import Annotated, Protocol, TypeVar

import msgspec
from litestar import Response
from litestar.exceptions import ClientException
from litestar.params import HeaderParameter

from tenantry.domain.errors import StaleVersion
from tenantry.presentation.reads import Read

_ETAG = re.compile(r'^(?:W/)?"(\d{1,10})"$')
# The version columns are PostgreSQL integers: no resource ever has a larger version.
VERSION_MAX = 2**31 - 1

R = TypeVar("R", bound=Read)

# The ``version`` a write body may carry instead of If-Match.
Version = Annotated[int, msgspec.Meta(ge=1, le=VERSION_MAX)]
IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        max_length=64,
        # A header is a string when sent (Litestar would say "or null"); the pattern is
        # documented, not enforced here: a malformed one is a 400 from expected_version.
        schema_extra={
            "oneOf": None,
            "type": "string",
            "pattern": r'^[ \t]*(\*|(W/)?"[0-9]{1,10}")[ \t]*$',
        },
    ),
]


class Versioned(Protocol):
    @property
    def version(self) -> int: ...


def etag(version: int) -> str:
    return f'"{version}"'


def with_etag(read: type[R], value: Versioned, status_code: int = 200) -> Response[R]:
    """``value`` as a ``read`` body, its version as the ETag."""
    return Response(read.of(value), status_code=status_code, headers={"ETag": etag(value.version)})


def expected_version(if_match: str | None, body_version: int | None) -> int | None:
    """The version a write is based on: the If-Match header or the body's ``version``."""
    if if_match is None or if_match.strip() == "*":
        return body_version
    match = _ETAG.match(if_match.strip())
    if match is None:
        raise ClientException('If-Match must be an ETag such as "3".')
    header_version = int(match.group(1))
    if header_version > VERSION_MAX:
        raise StaleVersion("No version is that large; fetch the resource and retry.")
    if body_version is not None and body_version != header_version:
        raise ClientException("If-Match and version disagree.")
    return header_version

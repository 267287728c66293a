"""Optimistic concurrency over HTTP: ``ETag`` on reads, ``If-Match`` (or ``version``) on writes."""

from __future__ import annotations

import re

from litestar.exceptions import ClientException

from tenantry.domain.errors import StaleVersion

_ETAG = re.compile(r'^(?:W/)?"(\d{1,10})"$')
# The version columns are PostgreSQL integers: no resource ever has a larger version.
VERSION_MAX = 2**31 - 1


def etag(version: int) -> str:
    return f'"{version}"'


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

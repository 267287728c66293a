"""The answer of every request that creates a resource: 201, its body, and where it is."""

from __future__ import annotations

from typing import TypeVar

from litestar import Response
from litestar.datastructures import ResponseHeader

from tenantry.presentation.concurrency import etag

T = TypeVar("T")

# What a route that creates documents besides its body.
NEW_RESOURCE = [
    ResponseHeader(name="Location", description="The new resource's URL", documentation_only=True)
]


def created(body: T, location: str, *, version: int | None = None) -> Response[T]:
    """201 with ``body``, the new resource's URL in Location, and its version as the ETag
    when it has one."""
    headers = {"Location": location}
    if version is not None:
        headers["ETag"] = etag(version)
    return Response(body, status_code=201, headers=headers)

"""The one list shape of the API: ``{items, total, limit, offset}``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any, Generic, Literal, TypeVar, get_args, get_type_hints

import msgspec
from litestar.exceptions import ValidationException
from litestar.params import QueryParameter

from tenantry.domain.repository import ListQuery
from tenantry.presentation.bodies import NO_NUL
from tenantry.presentation.reads import Read

T = TypeVar("T")

Limit = Annotated[int, QueryParameter(ge=1, le=100, description="Page size (1 to 100).")]
# Bounded so it always reaches the database as a number it takes (no list is anywhere near).
Offset = Annotated[int, QueryParameter(ge=0, le=2**31 - 1, description="Items to skip.")]


class Page(msgspec.Struct, Generic[T]):
    """A list endpoint's body. Each endpoint declares its own page, named for what it holds,
    with its items' type spelled out (``class ProjectPage(Page[ProjectRead]): items:
    list[ProjectRead]``): the OpenAPI component is then ``ProjectPage``, not a generic's name
    with module paths in it, and it says what its items are (Litestar does not resolve a
    generic parent's type variables)."""

    items: list[T]
    total: int
    limit: int
    offset: int


P = TypeVar("P", bound=Page[Any])


def page(kind: type[P], found: tuple[Iterable[object], int], limit: int, offset: int) -> P:
    """What a list use case found (its items and their total) as a page of ``kind``."""
    items, total = found
    return kind(items=_item_type(kind).each(items), total=total, limit=limit, offset=offset)


@cache
def _item_type(kind: type[Page[Any]]) -> type[Read]:
    (item,) = get_args(get_type_hints(kind)["items"])
    if not (isinstance(item, type) and issubclass(item, Read)):
        raise TypeError(f"{kind.__name__}.items: a list of a Read body, not {item!r}")
    return item


Search = Annotated[
    str | None,
    QueryParameter(max_length=200, pattern=NO_NUL, description="Case-insensitive substring match."),
]
# Strings parsed by ``instant``: as ``datetime`` parameters, Litestar would also read a number
# as Unix time and a time without an offset as naive, where the spec says RFC 3339.
CreatedAfter = Annotated[
    str | None,
    QueryParameter(format="date-time", max_length=64, description="Created at or after."),
]
CreatedBefore = Annotated[
    str | None,
    QueryParameter(format="date-time", max_length=64, description="Created at or before."),
]
_RFC3339 = Annotated[datetime, msgspec.Meta(tz=True)]


def instant(value: str | None, name: str) -> datetime | None:
    """A query parameter's RFC 3339 time (with its offset) in UTC; a 422 naming it otherwise."""
    if value is None:
        return None
    try:
        moment = msgspec.convert(value, _RFC3339)
    except msgspec.ValidationError:
        raise ValidationException(
            f"Invalid query parameter {name}.",
            extra=[{"key": name, "message": "must be an RFC 3339 date-time", "source": "query"}],
        ) from None
    try:
        # In UTC, as the database compares it.
        return moment.astimezone(UTC)
    except OverflowError:
        # Its offset takes it past the first or the last day Python counts (0001-01-01T00:30+01:00,
        # say): before or after every row, as the calendar's first or last instant is.
        return (datetime.min if moment.year == 1 else datetime.max).replace(tzinfo=UTC)


OrderField = Annotated[
    Literal["created_at", "-created_at", "name", "-name", "updated_at", "-updated_at"],
    QueryParameter(description="Sort field; a leading '-' sorts descending."),
]


def list_query(
    limit: int,
    offset: int,
    q: str | None = None,
    order_by: str = "-created_at",
    created_after: str | None = None,
    created_before: str | None = None,
) -> ListQuery:
    """A list endpoint's query parameters as the use case's query (times parsed, or a 422)."""
    return ListQuery(
        limit=limit,
        offset=offset,
        q=q,
        order_by=order_by,
        created_after=instant(created_after, "created_after"),
        created_before=instant(created_before, "created_before"),
    )

"""A list's filters, as advanced-alchemy builds them, for statements compiled once per shape.

advanced-alchemy's filters (search, order, created range, limit/offset) take values; a list's
statements are built from them with the stand-ins below, compiled once per shape (which filters
a query has, not their values), and each stand-in is then asked for as an argument
(:class:`~tenantry.infrastructure.db.tenancy.DriverStatement`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from advanced_alchemy.filters import (
    BeforeAfter,
    LimitOffset,
    OrderBy,
    SearchFilter,
    escape_like_value,
)

from tenantry.domain.repository import ListQuery

# The search text cannot be a user's (PostgreSQL text holds no NUL).
_SEARCHED = "\x00q\x00"
_AFTER = datetime(1, 1, 2, tzinfo=UTC)
_BEFORE = datetime(1, 1, 3, tzinfo=UTC)
_LIMIT, _OFFSET = -101, -102
# Each stand-in as the compiled statement shows it, and the argument it stands for.
PLACEHOLDERS = {
    f"%{escape_like_value(_SEARCHED)}%": "q",
    _AFTER: "after",
    _BEFORE: "before",
    _LIMIT: "limit",
    _OFFSET: "offset",
}


def shape(query: ListQuery) -> tuple[Any, ...]:
    """Which filters ``query`` has: what its compiled statements depend on."""
    return (
        query.order_by,
        bool(query.q),
        query.created_after is not None,
        query.created_before is not None,
    )


def stand_ins(query: ListQuery) -> ListQuery:
    """``query`` with a stand-in for each of its values."""
    return ListQuery(
        q=_SEARCHED if query.q else None,
        order_by=query.order_by,
        created_after=_AFTER if query.created_after is not None else None,
        created_before=_BEFORE if query.created_before is not None else None,
        limit=_LIMIT,
        offset=_OFFSET,
    )


def arguments(query: ListQuery) -> dict[str, Any]:
    """The values of ``query``, by the names of PLACEHOLDERS."""
    return {
        "q": f"%{escape_like_value(query.q)}%" if query.q else None,
        "after": query.created_after,
        "before": query.created_before,
        "limit": query.limit,
        "offset": query.offset,
    }


def paging(query: ListQuery) -> list[OrderBy | LimitOffset]:
    field = query.order_by.removeprefix("-")
    found: list[OrderBy | LimitOffset] = [
        OrderBy(field_name=field, sort_order="desc" if query.order_by.startswith("-") else "asc"),
    ]
    if field != "created_at":
        # A stable order across pages when the sort key repeats.
        found.append(OrderBy(field_name="created_at", sort_order="asc"))
    found.append(LimitOffset(limit=query.limit, offset=query.offset))
    return found


def narrowing(query: ListQuery, search_field: str | None) -> list[SearchFilter | BeforeAfter]:
    found: list[SearchFilter | BeforeAfter] = []
    if query.q and search_field is not None:
        found.append(
            SearchFilter(
                field_name=search_field,
                value=query.q,
                ignore_case=True,
                escape_wildcards=True,
            )
        )
    if query.created_after or query.created_before:
        found.append(
            BeforeAfter(
                field_name="created_at", before=query.created_before, after=query.created_after
            )
        )
    return found

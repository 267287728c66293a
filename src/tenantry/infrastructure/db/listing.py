"""The list endpoints' query, turned once into advanced-alchemy filters."""

from __future__ import annotations

from typing import Any

from advanced_alchemy.filters import (
    BeforeAfter,
    LimitOffset,
    OrderBy,
    SearchFilter,
    StatementFilter,
)

from tenantry.domain.projects import ListQuery


def list_filters(query: ListQuery, *, search_field: str) -> list[StatementFilter]:
    field = query.order_by.removeprefix("-")
    filters: list[StatementFilter] = [
        OrderBy(field_name=field, sort_order="desc" if query.order_by.startswith("-") else "asc"),
    ]
    if field != "created_at":
        # A stable order across pages when the sort key repeats.
        filters.append(OrderBy(field_name="created_at", sort_order="asc"))
    if query.q:
        filters.append(
            SearchFilter(
                field_name=search_field, value=query.q, ignore_case=True, escape_wildcards=True
            )
        )
    if query.created_after or query.created_before:
        filters.append(
            BeforeAfter(
                field_name="created_at", before=query.created_before, after=query.created_after
            )
        )
    filters.append(LimitOffset(limit=query.limit, offset=query.offset))
    return filters


def changes(**values: Any) -> dict[str, Any]:
    """The fields of a PATCH that were given."""
    return {name: value for name, value in values.items() if value is not None}

"""The one list shape of the API: ``{items, total, limit, offset}``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, Literal, TypeVar

import msgspec
from litestar.params import QueryParameter

T = TypeVar("T")

Limit = Annotated[int, QueryParameter(ge=1, le=100, description="Page size (1 to 100).")]
Offset = Annotated[int, QueryParameter(ge=0, description="Items to skip.")]


class Page(msgspec.Struct, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


Search = Annotated[
    str | None, QueryParameter(max_length=200, description="Case-insensitive substring match.")
]
CreatedAfter = Annotated[datetime | None, QueryParameter(description="Created at or after.")]
CreatedBefore = Annotated[datetime | None, QueryParameter(description="Created at or before.")]
OrderField = Annotated[
    Literal["created_at", "-created_at", "name", "-name", "updated_at", "-updated_at"],
    QueryParameter(description="Sort field; a leading '-' sorts descending."),
]

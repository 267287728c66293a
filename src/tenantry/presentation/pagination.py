"""The one list shape of the API: ``{items, total, limit, offset}``."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

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

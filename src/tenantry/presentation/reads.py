"""Response bodies converted from domain values by field name, never mapped field by field."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Self

import msgspec


class Read(msgspec.Struct):
    """A response body: the fields it declares, read by name from a domain value's attributes.

    Only the declared fields are read, so what a value holds besides (a hash, a storage key, a
    tenant id) never reaches a response. It declares no field and no config: a subclass's JSON
    and its OpenAPI component are exactly its own.
    """

    @classmethod
    def of(cls, value: object) -> Self:
        return msgspec.convert(value, cls, from_attributes=True)

    @classmethod
    def each(cls, values: Iterable[object]) -> list[Self]:
        # One conversion for the whole list, not one call per item; msgspec reads lists and
        # tuples, so any other iterable is listed first.
        many: Any = list[cls]  # type: ignore[valid-type]
        items = values if isinstance(values, list | tuple) else list(values)
        converted: list[Self] = msgspec.convert(items, many, from_attributes=True)
        return converted

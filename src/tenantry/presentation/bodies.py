"""What requests may carry, said in the schema as it is enforced: closed JSON objects, and
text that PostgreSQL can store.

Request Structs forbid unknown fields (a misspelt field is a 422, not silently dropped), which
Litestar does not carry into the schema it generates; these declarations do.
"""

from __future__ import annotations

from typing import Annotated, TypeAlias, TypeVar

import msgspec
from litestar.enums import RequestEncodingType
from litestar.params import BodyKwarg

T = TypeVar("T")

_CLOSED = {"additionalProperties": False}

# A request body: a JSON object of exactly the Struct's fields.
StrictJSONBody: TypeAlias = Annotated[
    T, BodyKwarg(media_type=RequestEncodingType.JSON, schema_extra=_CLOSED)
]

# The same, for an object nested in a body (Litestar reads ``extra`` as schema overrides).
CLOSED_OBJECT = msgspec.Meta(extra_json_schema={"extra": _CLOSED})

# PostgreSQL text cannot hold NUL, so no string a request stores or searches by may have one.
NO_NUL = r"^[^\x00]*$"
# White space as str.strip() sees it, spelt out so that the spec's regex dialect and msgspec's
# (Python's) agree on it.
_WHITE_SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Not blank either: a character besides NUL and white space.
NOT_BLANK = rf"^[^\x00]*[^\x00{_WHITE_SPACE}][^\x00]*$"

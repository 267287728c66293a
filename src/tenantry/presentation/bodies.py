"""What requests may carry, said in the schema as it is enforced: closed JSON objects, and
text that PostgreSQL can store; and how a JSON body is read.

Request Structs forbid unknown fields (a misspelt field is a 422, not silently dropped), which
Litestar does not carry into the schema it generates; these declarations do.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeAlias, TypeVar

import msgspec
from litestar import Request
from litestar.enums import RequestEncodingType
from litestar.exceptions import ClientException
from litestar.params import BodyKwarg

T = TypeVar("T")

JSON = "application/json"
# Where a 415 says what to send instead (RFC 5789 for PATCH; the same header's sibling for POST).
_ACCEPT_HEADER = {"PATCH": "Accept-Patch", "POST": "Accept-Post"}


def read_as_json(media_type: str) -> bool:
    """Whether a body of this media type (no parameters, lower case; "" when none was sent) is
    read as JSON: none at all, application/json or a +json type."""
    return media_type in ("", JSON) or media_type.endswith("+json")


class JSONBodyRequest(Request[Any, Any, Any]):
    """Litestar's request, reading a route's JSON body only when it is JSON and UTF-8.

    Litestar decodes any body as JSON whatever its Content-Type, and lets the UnicodeDecodeError
    of a body that is not UTF-8 through as a 500. A missing Content-Type is read as JSON, as
    most JSON APIs do; a different one is a 415.
    """

    async def json(self) -> Any:
        media_type, _ = self.content_type
        if not read_as_json(media_type):
            accept = _ACCEPT_HEADER.get(self.method)
            raise ClientException(
                status_code=415,
                detail=f"The body must be {JSON} (sent with that Content-Type, or none).",
                headers={accept: JSON} if accept else None,
            )
        try:
            return await super().json()
        except UnicodeDecodeError:
            raise ClientException(detail="The request body is not valid UTF-8.") from None


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

"""What the OpenAPI document says of each body besides its fields: a description (the Struct's
docstring) and an example (built from its fields). Litestar reads neither from a msgspec Struct.

A field's example is the one its Struct names in its ``example`` class variable, else the one
below for every field of that name, else its nested body's, its enum's first value or its
literal; tests/unit/test_openapi.py fails on a body whose example lacks a field or does not
validate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

# The plugin Litestar documents a Struct with: its fields as properties, reused here so a body's
# schema stays exactly Litestar's, with a description and an example added.
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.openapi.spec import Schema
    from litestar.typing import FieldDefinition

CREATED_AT = "2026-11-30T09:15:00Z"
UPDATED_AT = "2026-12-01T14:02:11Z"
TENANT_ID = "5f0b3c1e-8a2d-4e6f-9b7c-1d2e3f4a5b6c"
USER_ID = "0e4c2b7a-3f1d-4a8e-b5c6-7d8e9f0a1b2c"
PROJECT_ID = "a7d3e5f1-2b4c-4d6e-8f0a-1b3c5d7e9f2a"
FILE_ID = "c1b2a3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
WEBHOOK_ID = "9e8d7c6b-5a4f-4e3d-a2c1-b0a9f8e7d6c5"
EVENT_ID = "4b5c6d7e-8f9a-4b0c-9d1e-2f3a4b5c6d7e"
# Documented, never valid: the shape of what the API returns.
ACCESS_TOKEN = "eyJhbGciOiJFUzI1NiIsImtpZCI6IjIwMjYtMTEifQ.eyJzdWIiOiIuLi4ifQ.c2lnbmF0dXJl"
REFRESH_TOKEN = "5f0b3c1e8a2d4e6f9b7c1d2e3f4a5b6c.Zq3vN8kP1xW6yT4mB9cH2dF7gJ5sL0aRkE2uYw4oIi8"

FIELD_EXAMPLES: Mapping[str, Any] = {
    "id": "3c9a7e21-4f6b-4d8a-9e2c-5b1d0f7a8c36",
    "tenant_id": TENANT_ID,
    "project_id": PROJECT_ID,
    "webhook_id": WEBHOOK_ID,
    "event_id": EVENT_ID,
    "owner_id": USER_ID,
    "created_by": USER_ID,
    "requested_by": USER_ID,
    "actor_id": USER_ID,
    "api_key_id": "6a1f3e5d-7b9c-4d2e-8f0a-3c5e7a9b1d4f",
    "target_id": PROJECT_ID,
    "request_id": "0f6e2b9c8d7a4e15b3c2a1d0e9f8a7b6",
    "created_at": CREATED_AT,
    "updated_at": UPDATED_AT,
    "requested_at": CREATED_AT,
    "started_at": "2026-11-30T09:15:02Z",
    "finished_at": "2026-11-30T09:15:41Z",
    "completed_at": "2026-11-30T09:15:04Z",
    "expires_at": "2027-06-01T00:00:00Z",
    "last_used_at": UPDATED_AT,
    "last_login_at": UPDATED_AT,
    "next_attempt_at": "2026-11-30T09:16:00Z",
    "failing_since": "2026-11-29T22:40:00Z",
    "at": CREATED_AT,
    "day": "2026-11-30",
    "from_": "2026-11-01",
    "to": "2026-11-30",
    "version": 3,
    "total": 1,
    "limit": 50,
    "offset": 0,
    "slug": "acme",
    "username": "ada",
    "email": "ada@example.com",
    "login": "ada@example.com",
    "password": "correct horse battery staple",
    "roles": ["admin", "member"],
    "is_active": True,
    "settings": {"locale": "en-GB"},
    "allow_self_signup": False,
    "metadata": {"source": "import"},
    "title": "Kick-off notes",
    "content": "Goals, owners and the first milestone.",
    "description": "The new marketing site, live by March.",
    "access_token": ACCESS_TOKEN,
    "refresh_token": REFRESH_TOKEN,
    "expires_in": 900,
    "prefix": "8c1f0a7e2b3d",
    "duration_ms": 42,
    "error": "connect timeout after 10 s",
    "error_message": "the file is not a readable PDF",
    "progress": 100,
    "retry_count": 0,
    "cancel_requested": False,
    "input_files": [FILE_ID],
    "output_files": [],
    "result": {"pages": 12},
    "attempt": 1,
    "succeeded": False,
    "response_status": 503,
    "response_body": "upstream unavailable",
    "url": "https://hooks.example.com/tenantry",
    "events": ["project.created", "project.updated"],
    "active": True,
    "disabled_reason": "failing for 3 days",
    "event_type": "project.created",
    "payload": {"type": "project.created", "data": {"id": PROJECT_ID}},
    "requests": 1280,
    "requests_read": 1100,
    "requests_write": 150,
    "requests_upload": 20,
    "requests_task": 10,
    "bytes_uploaded": 5242880,
    "bytes_downloaded": 10485760,
    "bytes_stored": 73400320,
    "bytes_stored_peak": 73400320,
    "bytes_stored_end": 73400320,
    "peak_bytes_stored": 73400320,
    "active_users": 7,
    "peak_active_users": 9,
    "task_runs": 10,
    "task_seconds": 12.5,
    "runs": 10,
    "seconds": 12.5,
    "rows": 1520,
    "objects": 36,
    "latency_ms": 1.8,
}


def description_of(struct: type[msgspec.Struct]) -> str | None:
    # A class's own docstring only: a Read body must not be described as Read.
    doc = struct.__dict__.get("__doc__")
    return " ".join(doc.split()) if doc else None


def example_of(struct: type[msgspec.Struct]) -> dict[str, Any]:
    """The body's example as JSON, a field it finds no example for left out."""
    own: Mapping[str, Any] = getattr(struct, "example", {})
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    example = {}
    for field in info.fields:
        if field.name in own:
            example[field.encode_name] = own[field.name]
        elif field.name in FIELD_EXAMPLES:
            example[field.encode_name] = FIELD_EXAMPLES[field.name]
        elif (value := _derived(field.type)) is not _NONE:
            example[field.encode_name] = value
    return example


_NONE = object()


def _derived(kind: msgspec.inspect.Type) -> Any:
    if isinstance(kind, msgspec.inspect.Metadata):
        return _derived(kind.type)
    if isinstance(kind, msgspec.inspect.UnionType):
        return next((value for t in kind.types if (value := _derived(t)) is not _NONE), _NONE)
    if isinstance(kind, msgspec.inspect.StructType):
        return example_of(kind.cls)
    if isinstance(kind, msgspec.inspect.ListType):
        item = _derived(kind.item_type)
        return _NONE if item is _NONE else [item]
    if isinstance(kind, msgspec.inspect.EnumType):
        return next(iter(kind.cls)).value
    if isinstance(kind, msgspec.inspect.LiteralType):
        return kind.values[0]
    return _NONE


class DescribedStructs(StructSchemaPlugin):
    """Every body's component with its docstring as description and its example."""

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        struct = field_definition.type_
        schema.description = description_of(struct)
        schema.examples = [example_of(struct)]
        return schema

"""What in a new OpenAPI document breaks a client of an older one: a path, operation, response
or field gone, a field or parameter newly required of requests, an enum value gone, a request
field narrowed (taking fewer types) or a response field widened (giving more). Additions
(paths, optional fields, enum values) are not breaking."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
Schema = Mapping[str, Any]


def breaking_changes(old: Schema, new: Schema) -> list[str]:
    """Each change from ``old`` to ``new`` that breaks a client built on ``old``, in words."""
    return list(_Comparison(old, new).paths())


class _Comparison:
    def __init__(self, old: Schema, new: Schema) -> None:
        self.old, self.new = old, new

    def paths(self) -> Iterator[str]:
        for path, item in self.old.get("paths", {}).items():
            new_item = self.new.get("paths", {}).get(path)
            if new_item is None:
                yield f"{path}: the path is gone"
                continue
            for method in METHODS:
                if method in item:
                    where = f"{method.upper()} {path}"
                    if method not in new_item:
                        yield f"{where}: the operation is gone"
                    else:
                        yield from self.operation(where, item[method], new_item[method])

    def operation(self, where: str, old: Schema, new: Schema) -> Iterator[str]:
        before = {(p["in"], p["name"]): p for p in old.get("parameters", [])}
        for parameter in new.get("parameters", []):
            known = before.get((parameter["in"], parameter["name"]))
            if parameter.get("required") and not (known and known.get("required")):
                yield f"{where}: parameter {parameter['name']} is now required"
            if known is not None:
                yield from self.schema(
                    f"{where} parameter {parameter['name']}",
                    known.get("schema", {}),
                    parameter.get("schema", {}),
                    request=True,
                )
        old_body, new_body = (
            _json_schema(old.get("requestBody")),
            _json_schema(new.get("requestBody")),
        )
        if old_body is not None and new_body is not None:
            yield from self.schema(f"{where} body", old_body, new_body, request=True)
        for status, response in old.get("responses", {}).items():
            if not status.startswith("2"):
                continue
            new_response = new.get("responses", {}).get(status)
            if new_response is None:
                yield f"{where}: response {status} is gone"
                continue
            old_schema, new_schema = _json_schema(response), _json_schema(new_response)
            if old_schema is not None and new_schema is not None:
                yield from self.schema(f"{where} {status}", old_schema, new_schema, request=False)

    def schema(
        self,
        where: str,
        old: Schema,
        new: Schema,
        *,
        request: bool,
        seen: frozenset[tuple[str, str]] = frozenset(),
    ) -> Iterator[str]:
        refs = (old.get("$ref", ""), new.get("$ref", ""))
        if refs != ("", "") and refs in seen:
            return
        seen = seen | {refs}
        old, new = self.resolve(self.old, old), self.resolve(self.new, new)
        gone = [value for value in old.get("enum", []) if value not in new.get("enum", [value])]
        if gone:
            yield f"{where}: enum values gone: {', '.join(map(str, gone))}"
        if request and _types(new) and (narrowed := _types(old) - _types(new)):
            yield f"{where}: no longer takes {', '.join(sorted(narrowed))}"
        if not request and _types(old) and (widened := _types(new) - _types(old)):
            yield f"{where}: may now be {', '.join(sorted(widened))}"
        old_fields, new_fields = old.get("properties", {}), new.get("properties", {})
        for name, field in old_fields.items():
            if name not in new_fields:
                yield f"{where}: field {name} is gone"
            else:
                yield from self.schema(
                    f"{where}.{name}", field, new_fields[name], request=request, seen=seen
                )
        old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
        if request:
            for name in sorted(new_required - old_required):
                yield f"{where}: field {name} is now required"
        else:
            for name in sorted((old_required - new_required) & set(new_fields)):
                yield f"{where}: field {name} may now be absent"
        if "items" in old and "items" in new:
            yield from self.schema(
                f"{where}[]", old["items"], new["items"], request=request, seen=seen
            )
        for key in ("anyOf", "oneOf"):
            if len(old.get(key, [])) == len(new.get(key, [])):
                for old_option, new_option in zip(old.get(key, []), new.get(key, []), strict=True):
                    yield from self.schema(
                        where, old_option, new_option, request=request, seen=seen
                    )

    @staticmethod
    def resolve(document: Schema, schema: Schema) -> Schema:
        while "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            schema = document.get("components", {}).get("schemas", {}).get(name, {})
        return schema


def _json_schema(holder: Schema | None) -> Schema | None:
    """The JSON schema of a request body or response, if it has one."""
    content = (holder or {}).get("content", {})
    for media_type, entry in content.items():
        if "json" in media_type and "schema" in entry:
            schema: Schema = entry["schema"]
            return schema
    return None


def _types(schema: Schema) -> set[str]:
    kind = schema.get("type")
    if kind is None:
        return set()
    return {kind} if isinstance(kind, str) else set(kind)

"""The breaking-change check of the HTTP contract: what breaks a client built on an older
document, what does not, and that the current contract breaks none built on the release."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tenantry.bootstrap import openapi_document
from tenantry.cli import main
from tenantry.cli.contract import breaking_changes

RELEASED = Path("docs/releases/openapi-0.1.0.json")


def document() -> dict[str, Any]:
    item = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "status": {"$ref": "#/components/schemas/Status"},
            "note": {"type": ["string", "null"]},
        },
        "required": ["id", "status"],
    }
    create = {
        "type": "object",
        "properties": {"name": {"type": ["string", "null"]}, "kind": {"enum": ["a", "b"]}},
        "required": [],
    }

    def body(ref: str) -> dict[str, Any]:
        return {"content": {"application/json": {"schema": {"$ref": ref}}}}

    return {
        "paths": {
            "/things": {
                "get": {
                    "parameters": [{"in": "query", "name": "q", "schema": {"type": "string"}}],
                    "responses": {"200": body("#/components/schemas/Page")},
                },
                "post": {
                    "requestBody": body("#/components/schemas/Create"),
                    "responses": {"201": body("#/components/schemas/Item")},
                },
            },
            "/things/{id}": {"delete": {"responses": {"204": {"description": "gone"}}}},
        },
        "components": {
            "schemas": {
                "Item": item,
                "Page": {
                    "type": "object",
                    "properties": {
                        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}}
                    },
                },
                "Create": create,
                "Status": {"type": "string", "enum": ["on", "off"]},
            }
        },
    }


def changed(edit: Any) -> list[str]:
    old = document()
    new = copy.deepcopy(old)
    edit(new)
    return breaking_changes(old, new)


def test_the_same_document_breaks_nothing() -> None:
    assert changed(lambda new: None) == []


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d["paths"].pop("/things/{id}"), "/things/{id}: the path is gone"),
        (lambda d: d["paths"]["/things"].pop("post"), "POST /things: the operation is gone"),
        (
            lambda d: d["components"]["schemas"]["Item"]["properties"].pop("note"),
            "POST /things 201: field note is gone",
        ),
        (
            lambda d: d["components"]["schemas"]["Status"]["enum"].remove("off"),
            "enum values gone: off",
        ),
        (
            lambda d: d["components"]["schemas"]["Create"]["required"].append("name"),
            "POST /things body: field name is now required",
        ),
        (
            lambda d: d["components"]["schemas"]["Create"]["properties"]["name"].update(
                type="string"
            ),
            "POST /things body.name: no longer takes null",
        ),
        (
            lambda d: d["components"]["schemas"]["Item"]["required"].remove("status"),
            "field status may now be absent",
        ),
        (
            lambda d: d["paths"]["/things"]["get"]["parameters"][0].update(required=True),
            "GET /things: parameter q is now required",
        ),
        (
            lambda d: d["paths"]["/things"]["post"]["responses"].pop("201"),
            "POST /things: response 201 is gone",
        ),
    ],
)
def test_what_breaks_a_client(edit: Any, expected: str) -> None:
    found = changed(edit)
    assert any(expected in change for change in found), found


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["paths"].update({"/more": {"get": {"responses": {}}}}),
        lambda d: d["components"]["schemas"]["Item"]["properties"].update(extra={"type": "string"}),
        lambda d: d["components"]["schemas"]["Create"]["properties"].update(opt={"type": "string"}),
        lambda d: d["components"]["schemas"]["Create"]["properties"]["kind"]["enum"].append("c"),
        lambda d: d["components"]["schemas"]["Item"]["properties"]["note"].update(type="string"),
    ],
)
def test_what_does_not(edit: Any) -> None:
    assert changed(edit) == []


def test_the_contract_breaks_no_client_of_the_release(project_root: Path) -> None:
    released = json.loads((project_root / RELEASED).read_text())
    assert breaking_changes(released, json.loads(openapi_document())) == []


def test_the_cli_says_what_breaks(tmp_path: Path, project_root: Path) -> None:
    released = json.loads((project_root / RELEASED).read_text())
    released["paths"]["/api/v1/gone"] = {"get": {"responses": {}}}
    path = tmp_path / "released.json"
    path.write_text(json.dumps(released))
    result = CliRunner().invoke(main, ["openapi", "--breaking-against", str(path)])
    assert result.exit_code == 1
    assert "/api/v1/gone: the path is gone" in result.output

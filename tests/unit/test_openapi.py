"""The HTTP contract: the committed docs/openapi.json is the one the app serves (built-in task
types), and its names are ones a client generator turns into good code."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from tenantry.bootstrap import openapi_document
from tenantry.cli import main

CAMEL_CASE = re.compile(r"^[a-z]+(?:[A-Z][a-z0-9]*)*$")
# A component name a generator keeps as it is: a word or words, no module path or brackets.
PLAIN_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def served() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(openapi_document())
    return document


def test_the_committed_contract_is_the_served_one(project_root: Path) -> None:
    committed = (project_root / "docs" / "openapi.json").read_bytes()
    assert committed == openapi_document(), (
        "docs/openapi.json is not the current contract: run `uv run tenantry openapi`, review "
        "the difference and commit it"
    )


def test_operation_ids_are_unique_camel_case_verbs() -> None:
    ids = [
        operation["operationId"]
        for item in served()["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict) and "operationId" in operation
    ]
    assert len(ids) == len(set(ids))
    assert [name for name in ids if not CAMEL_CASE.match(name)] == []
    for expected in ("listProjects", "getProject", "createApiKey", "getMe", "downloadFile"):
        assert expected in ids


def test_component_names_are_plain_words() -> None:
    names = list(served()["components"]["schemas"])
    assert [name for name in names if not PLAIN_NAME.match(name)] == []
    pages = {name for name in names if name.endswith("Page")}
    assert {"ProjectPage", "TaskPage", "UserPage", "TenantPage", "WebhookPage"} <= pages


def test_every_page_says_what_its_items_are() -> None:
    schemas = served()["components"]["schemas"]
    for name, schema in schemas.items():
        if name.endswith("Page") and "items" in schema.get("properties", {}):
            items = schema["properties"]["items"]["items"]
            assert "$ref" in items, (name, items)


def test_the_cli_checks_and_writes_the_document(tmp_path: Path) -> None:
    target = tmp_path / "openapi.json"
    runner = CliRunner()
    stale = runner.invoke(main, ["openapi", "--check", "--output", str(target)])
    assert stale.exit_code == 1
    assert "tenantry openapi" in stale.output
    assert runner.invoke(main, ["openapi", "--output", str(target)]).exit_code == 0
    assert target.read_bytes() == openapi_document()
    current = runner.invoke(main, ["openapi", "--check", "--output", str(target)])
    assert current.exit_code == 0, current.output


def test_closed_sets_are_enums() -> None:
    schemas = served()["components"]["schemas"]

    def enum_of(schema: dict[str, Any]) -> list[str]:
        if "$ref" in schema:
            return enum_of(schemas[schema["$ref"].rsplit("/", 1)[1]])
        return list(schema.get("enum") or schema.get("items", {}).get("enum") or []) or (
            enum_of(schema["items"]) if "items" in schema else []
        )

    assert "cancelled" in enum_of(schemas["TaskRead"]["properties"]["status"])
    assert "suspended" in enum_of(schemas["TenantRead"]["properties"]["status"])
    assert "owner" in enum_of(schemas["UserRead"]["properties"]["roles"])
    assert "finished" in enum_of(schemas["ErasureRead"]["properties"]["state"])
    assert "api_key" in enum_of(schemas["AuditEventRead"]["properties"]["actor_type"])
    assert "succeeded" in enum_of(schemas["DeliveryRead"]["properties"]["status"])


def test_every_201_says_where_the_new_resource_is() -> None:
    created = [
        (path, operation)
        for path, item in served()["paths"].items()
        for operation in item.values()
        if isinstance(operation, dict) and "201" in operation.get("responses", {})
    ]
    assert len(created) >= 9
    for path, operation in created:
        assert "Location" in operation["responses"]["201"].get("headers", {}), path


def test_every_tag_is_described_once() -> None:
    document = served()
    described = [tag["name"] for tag in document["tags"]]
    assert all(tag.get("description") for tag in document["tags"])
    used = {
        tag
        for item in document["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict)
        for tag in operation.get("tags", [])
    }
    assert sorted(described) == sorted(used)
    assert len(described) == len(set(described))


def test_every_body_is_described_with_an_example_that_validates() -> None:
    document = served()
    schemas = document["components"]["schemas"]
    undescribed = sorted(name for name, schema in schemas.items() if not schema.get("description"))
    assert undescribed == [], "give these a docstring"
    for name, schema in schemas.items():
        if schema.get("type") != "object":
            continue
        assert len(schema.get("examples", [])) == 1, name
        (example,) = schema["examples"]
        missing = sorted(set(schema.get("properties", {})) - set(example))
        assert missing == [], (
            f"{name}'s example lacks {missing}: name them in its `example` or in "
            "presentation/openapi.py"
        )
        validator = Draft202012Validator({"$ref": f"#/components/schemas/{name}", **document})
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(example)]
        assert errors == [], (name, errors)


def test_each_example_is_a_body_the_server_reads() -> None:
    document = served()
    bodies = {
        struct.__name__: struct
        for struct in _structs()
        if struct.__name__ in document["components"]["schemas"]
    }
    assert len(bodies) >= 50
    for name, struct in bodies.items():
        (example,) = document["components"]["schemas"][name]["examples"]
        msgspec.convert(example, struct, strict=False)


def _structs() -> list[type[msgspec.Struct]]:
    found, pending = [], [msgspec.Struct]
    while pending:
        for sub in pending.pop().__subclasses__():
            pending.append(sub)
            if sub.__module__.startswith("tenantry."):
                found.append(sub)
    return found


def test_a_python_client_generates_without_a_warning(project_root: Path, tmp_path: Path) -> None:
    generator = Path(sys.executable).with_name("openapi-python-client")
    run = subprocess.run(
        [
            str(generator),
            "generate",
            "--path",
            str(project_root / "docs" / "openapi.json"),
            "--output-path",
            str(tmp_path / "client"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "warning" not in (run.stdout + run.stderr).lower(), run.stdout + run.stderr
    models = {path.stem for path in (tmp_path / "client").glob("*/models/*.py")}
    readable = {"project_page", "task_page", "user_page", "tenant_page", "task_read", "task_status"}
    assert readable <= models
    # An enum is one model, never one per branch of a nullable union.
    assert [name for name in models if re.search(r"type_\d+_type_\d+|status_type", name)] == []

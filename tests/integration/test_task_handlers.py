"""Task handlers from outside the package, found as a worker and the API find them: the example
package examples/thumbnails (installed with the dev dependencies, an entry point of the group
tenantry.tasks) run end to end through the API and a worker, a module named by
TENANTRY_TASK_MODULES, and the refusals: a config or an input file the handler does not take,
a type claimed twice."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient
from PIL import Image

from tenantry import bootstrap
from tenantry.application.tasks import HandlerError
from tenantry.bootstrap.handlers import handler_registry
from tenantry.config import Settings

from ..conftest import Client, captured_logs
from .identity import owner_session
from .test_cli import in_process
from .test_health import assert_problem
from .test_tasks import submit, task_settings, wait_for

MODULES = ["tests.integration.handler_modules.echo"]


@pytest.fixture
async def client(settings: Settings, clean_state: None) -> AsyncIterator[Client]:
    configured = msgspec.structs.replace(task_settings(settings), task_modules=MODULES)
    app = bootstrap.create_app(configured, with_worker=True)
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


def image(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(out, format="PNG")
    return out.getvalue()


async def test_the_example_packages_handler_makes_thumbnails(client: Client) -> None:
    owner = await owner_session(client, "acme")
    uploaded = await client.post(
        "/api/v1/files", headers=owner, files={"file": ("photo.png", image(300, 200), "image/png")}
    )
    assert uploaded.status_code == 201, uploaded.text
    file_id = uploaded.json()["id"]
    with captured_logs() as lines:
        task = await submit(
            client,
            {**owner, "X-Request-ID": "req-thumbnail"},
            "image.thumbnail",
            input_files=[file_id],
            config={"width": 64, "height": 64, "format": "png"},
        )
        done = await wait_for(client, owner, task["id"], "completed", "failed")
    # The handler's own line (context.log), carrying what the worker's lines carry.
    [made_line] = lines.of("tenantry.tasks.image.thumbnail")
    assert made_line["message"] == "thumbnail made"
    assert (made_line["request_id"], made_line["task_id"], made_line["file_id"]) == (
        "req-thumbnail",
        task["id"],
        file_id,
    )
    assert done["status"] == "completed", done["error_message"]
    made = done["result"]["thumbnails"][file_id]
    assert done["output_files"] == [made["file_id"]]
    content = await client.get(f"/api/v1/files/{made['file_id']}/content", headers=owner)
    assert content.status_code == 200, content.text
    with Image.open(io.BytesIO(content.content)) as thumbnail:
        assert (thumbnail.format, thumbnail.size) == ("PNG", (64, 43))
    stored = (await client.get(f"/api/v1/files/{made['file_id']}", headers=owner)).json()
    assert (stored["original_filename"], stored["content_type"]) == (
        "photo.thumbnail.png",
        "image/png",
    )


async def test_a_config_or_input_the_handler_does_not_take_is_422_naming_it(
    client: Client,
) -> None:
    owner = await owner_session(client, "acme")
    text_file = (
        await client.post(
            "/api/v1/files", headers=owner, files={"file": ("a.txt", b"words\n", "text/plain")}
        )
    ).json()["id"]

    async def refused(body: dict[str, Any]) -> dict[str, str]:
        response = await client.post("/api/v1/tasks", headers=owner, json=body)
        problem = assert_problem(response, 422)
        return {error["field"]: error["message"] for error in problem["errors"]}  # type: ignore[union-attr]

    fields = await refused({"type": "image.thumbnail", "config": {"width": 0}})
    assert fields == {"config.width": "Expected `int` >= 1"}
    fields = await refused({"type": "image.thumbnail", "config": {"colour": "red"}})
    assert fields == {"config.colour": "Object contains unknown field `colour`"}
    fields = await refused({"type": "test.echo", "config": {}})
    assert fields == {"config.words": "Object missing required field `words`"}
    fields = await refused({"type": "image.thumbnail", "input_files": [text_file]})
    assert "text/plain" in fields["input_files"]
    assert "image/png" in fields["input_files"]


async def test_a_handler_of_a_named_module_runs(client: Client) -> None:
    owner = await owner_session(client, "acme")
    task = await submit(client, owner, "test.echo", config={"words": ["hello", "there"]})
    done = await wait_for(client, owner, task["id"], "completed", "failed")
    assert (done["status"], done["result"]) == ("completed", {"echo": "hello there"})


def test_a_type_claimed_twice_or_a_module_that_is_not_there_stops_the_start() -> None:
    with pytest.raises(HandlerError, match="'noop' is claimed twice"):
        handler_registry(["tests.integration.handler_modules.clash"])
    with pytest.raises(HandlerError, match="cannot be imported"):
        handler_registry(["tests.integration.handler_modules.missing"])
    with pytest.raises(HandlerError, match="has no TASK_HANDLERS"):
        handler_registry(["tests.integration.handler_modules"])


async def test_the_cli_lists_every_type_and_where_it_comes_from() -> None:
    code, out, _ = await in_process("tasks", "list", TENANTRY_TASK_MODULES=",".join(MODULES))
    assert code == 0, out
    assert "noop\n" in out
    assert "image.thumbnail\n    config: {width?, height?, format?}\n" in out
    assert "input files: image/jpeg, image/png, image/webp" in out
    assert "from: entry point thumbnail = tenantry_thumbnails:Thumbnail" in out
    assert "test.echo\n    config: {words}\n" in out
    code, _, err = await in_process(
        "tasks", "list", TENANTRY_TASK_MODULES="tests.integration.handler_modules.clash"
    )
    assert code == 2
    assert "'noop' is claimed twice" in err


async def test_openapi_documents_every_submittable_type(client: Client) -> None:
    spec = (await client.get("/docs/openapi.json")).json()
    body = spec["paths"]["/api/v1/tasks"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/TaskCreate"}
    schemas = spec["components"]["schemas"]
    task = schemas["TaskCreate"]
    # tenant.export is started by POST /api/v1/tenant/export, not here.
    assert {"noop", "file.inspect", "image.thumbnail", "test.echo"} <= set(
        task["properties"]["type"]["enum"]
    )
    assert "tenant.export" not in task["properties"]["type"]["enum"]
    config = task["properties"]["config"]
    assert "image.thumbnail: ThumbnailConfig" in config["description"]
    assert {"$ref": "#/components/schemas/ThumbnailConfig"} in config["anyOf"]
    assert set(schemas["ThumbnailConfig"]["properties"]) == {"width", "height", "format"}
    assert (
        "image.thumbnail: image/jpeg, image/png" in task["properties"]["input_files"]["description"]
    )

"""Task handlers from outside the package run by a real `tenantry worker` process: the example
package's (an entry point) and a module's (TENANTRY_TASK_MODULES), submitted through the API."""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from litestar.testing import AsyncTestClient
from PIL import Image

from tenantry import bootstrap
from tenantry.config import Settings

from ..integration.identity import owner_session
from ..integration.test_task_handlers import MODULES, image
from ..integration.test_tasks import submit, task_settings, wait_for
from .test_worker_kill import worker_env

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def worker(
    settings: Settings, project_root: Path, clean_state: None
) -> AsyncIterator[Settings]:
    """`tenantry worker` on this test's queue, with the handler module of the tests."""
    # The API validates what the worker runs: both know the module.
    configured = msgspec.structs.replace(task_settings(settings), task_modules=MODULES)
    env = worker_env(configured) | {"TENANTRY_TASK_MODULES": ",".join(MODULES)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tenantry", "worker",
        cwd=project_root, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield configured
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), timeout=30)


async def test_a_tenantry_worker_runs_handlers_from_outside(worker: Settings) -> None:
    api = bootstrap.create_app(worker, with_worker=False)
    async with AsyncTestClient(app=api) as client:
        owner = await owner_session(client, "acme")
        uploaded = await client.post(
            "/api/v1/files",
            headers=owner,
            files={"file": ("photo.png", image(400, 400), "image/png")},
        )
        assert uploaded.status_code == 201, uploaded.text
        thumbnail = await submit(
            client,
            owner,
            "image.thumbnail",
            input_files=[uploaded.json()["id"]],
            config={"width": 32, "height": 32, "format": "jpeg"},
        )
        echo = await submit(client, owner, "test.echo", config={"words": ["from", "a", "module"]})

        done = await wait_for(client, owner, thumbnail["id"], "completed", "failed")
        assert done["status"] == "completed", done["error_message"]
        [output] = done["output_files"]
        content = await client.get(f"/api/v1/files/{output}/content", headers=owner)
        with Image.open(io.BytesIO(content.content)) as made:
            assert (made.format, made.size) == ("JPEG", (32, 32))
        done = await wait_for(client, owner, echo["id"], "completed", "failed")
        assert done["result"] == {"echo": "from a module"}

"""The API docs page in a real browser (Debian's headless Chromium): served whole by the app,
under a Content-Security-Policy of 'self' only, it renders the operations. Skipped, saying
why, where Chromium is not installed (apt-get install chromium)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile

import msgspec
import pytest
import uvicorn

from tenantry import bootstrap
from tenantry.cli.run import _uvicorn_options
from tenantry.config import Settings
from tenantry.infrastructure.embedded import free_port

from ..conftest import uvicorn_serving

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"
    ),
]


async def rendered(url: str) -> str:
    """The page's DOM once its scripts ran, as headless Chromium dumps it."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        browser = await asyncio.create_subprocess_exec(
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--no-first-run", f"--user-data-dir={profile}",
            "--virtual-time-budget=15000", "--dump-dom", url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(browser.communicate(), timeout=90)
    return out.decode()


async def test_the_docs_page_renders_its_operations_offline(
    settings: Settings, clean_state: None
) -> None:
    served = msgspec.structs.replace(settings, host="127.0.0.1", port=free_port())
    app = bootstrap.create_app(served)
    async with uvicorn_serving(uvicorn.Config(app, **_uvicorn_options(served))):
        dom = await rendered(f"http://127.0.0.1:{served.port}/docs")
    # Swagger UI drew the operations of the spec it fetched from the app.
    assert "swagger-ui" in dom
    assert dom.count('class="opblock ') >= 40, dom[:2000]
    for operation in ("/api/v1/projects", "/api/v1/webhooks", "listProjects"):
        assert operation in dom
    # Nothing came from elsewhere.
    assert "cdn." not in dom
    assert "unpkg" not in dom

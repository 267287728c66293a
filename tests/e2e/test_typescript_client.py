"""The TypeScript client (clients/typescript) against a real `tenantry dev`: its types are
generated from the committed contract and current, it compiles (tsc), and its tests (node's
test runner) pass. Skipped, saying why, without Node or without its packages (`npm ci` in
clients/typescript; .ci/run does it)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from .test_dev import DevServer

pytestmark = pytest.mark.timeout(240)

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "typescript"
NPM = shutil.which("npm")
if NPM is None:
    pytestmark = [pytestmark, pytest.mark.skip(reason="Node.js and npm are not installed")]
elif not (CLIENT / "node_modules").is_dir():
    pytestmark = [
        pytestmark,
        pytest.mark.skip(
            reason="the client's packages are not installed: npm ci in clients/typescript"
        ),
    ]


async def run(*command: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=CLIENT,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


async def test_the_clients_types_are_generated_from_the_committed_contract(tmp_path: Path) -> None:
    generated = tmp_path / "schema.d.ts"
    generator = str(CLIENT / "node_modules" / ".bin" / "openapi-typescript")
    code, output = await run(
        generator,
        "../../docs/openapi.json",
        "--default-non-nullable",
        "false",
        "-o",
        str(generated),
    )
    assert code == 0, output
    assert generated.read_text() == (CLIENT / "src" / "schema.d.ts").read_text(), (
        "clients/typescript/src/schema.d.ts is not current: npm run generate in clients/typescript"
    )


async def test_the_client_works_against_tenantry_dev(tmp_path: Path) -> None:
    assert NPM is not None
    server = DevServer(tmp_path / "data")
    try:
        await server.start()
        code, output = await run(NPM, "test", env={"TENANTRY_URL": server.base})
        assert code == 0, output
        assert "# fail 0" in output, output
    finally:
        if server.process is not None and server.process.returncode is None:
            await server.stop()
        for process in server.engine_processes():
            process.kill()

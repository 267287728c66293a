"""The `tenantry` command as an operator runs it."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest


async def tenantry(*args: str, **env: str) -> tuple[int, str, str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("TENANTRY_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tenantry", *args,
        env=clean | env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TENANTRY_PORT": "abc"}, "error: TENANTRY_PORT: Expected `int` (got 'abc')"),
        (
            {"TENANTRY_ENV": "prod"},
            "error: TENANTRY_ENV: Expected one of development, production, test (got 'prod')",
        ),
        (
            {"TENANTRY_REDIS_URL": "redis://x"},
            "error: TENANTRY_DATABASE_URL: required here but not set",
        ),
        (
            {"TENANTRY_DATABASE_URL": "postgresql://x/y"},
            "error: TENANTRY_REDIS_URL: required here but not set",
        ),
    ],
)
async def test_serve_stops_on_a_bad_setting_with_one_line(
    env: dict[str, str], message: str
) -> None:
    code, _, err = await tenantry("serve", **env)
    assert code == 2
    assert err.strip() == message


async def test_db_current_and_upgrade(database_url: str) -> None:
    code, out, err = await tenantry("db", "upgrade", TENANTRY_DATABASE_URL=database_url)
    assert code == 0, err
    assert "Upgraded to head." in out
    code, out, err = await tenantry("db", "current", TENANTRY_DATABASE_URL=database_url)
    assert code == 0, err
    assert "(head)" in out


async def test_help_lists_the_commands() -> None:
    code, out, _ = await tenantry("--help")
    assert code == 0
    for command in ("dev", "serve", "db"):
        assert command in out

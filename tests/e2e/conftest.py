"""What the end-to-end tests share: the worker processes they start, killed at the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


@pytest.fixture
async def workers() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Worker processes a test starts (tests/e2e/test_worker_kill.py, start_worker): any still
    running at the end is killed."""
    started: list[asyncio.subprocess.Process] = []
    yield started
    for process in started:
        if process.returncode is None:
            process.kill()
            await process.wait()

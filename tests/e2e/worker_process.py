"""A worker process with the test handlers, for tests that kill workers: run as
``python -m tests.e2e.worker_process`` with the usual TENANTRY_* environment."""

from __future__ import annotations

import asyncio

from tenantry import bootstrap
from tenantry.application.tasks import Registry
from tenantry.config import load_settings
from tenantry.infrastructure.observability.logging import configure_logging

from ..integration.test_tasks import TEST_HANDLERS


async def main() -> None:
    settings = load_settings()
    configure_logging(settings)
    container = bootstrap.Container(settings)
    container.registry = Registry(TEST_HANDLERS)
    await container.start()
    try:
        await container.worker(handle_signals=True).async_run()
    finally:
        await container.close()


if __name__ == "__main__":
    asyncio.run(main())

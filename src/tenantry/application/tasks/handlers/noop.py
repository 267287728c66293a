"""Task ``noop``."""

from __future__ import annotations

import builtins
from typing import Any

import msgspec

from tenantry.application.tasks import (
    TaskContext,
)


class NoopConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The config of a noop task."""


class Noop:
    """Task ``noop``: does nothing, successfully. Operators use it to see that workers run
    tasks end to end; the task benchmark measures the pipeline with it."""

    type: str = "noop"
    config_type: builtins.type[msgspec.Struct] = NoopConfig

    async def run(self, context: TaskContext, config: NoopConfig) -> dict[str, Any]:  # noqa: ARG002 - nothing to configure
        await context.progress(100)
        return {}


# Hashing a chunk this large takes milliseconds: it goes to a thread (hashlib lets go of the

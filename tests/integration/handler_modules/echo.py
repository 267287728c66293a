"""A module of task handlers, as TENANTRY_TASK_MODULES names one: TASK_HANDLERS lists them."""

from __future__ import annotations

from typing import Any

import msgspec


class EchoConfig(msgspec.Struct, forbid_unknown_fields=True):
    words: list[str]


class Echo:
    type = "test.echo"
    config_type = EchoConfig

    async def run(self, context: Any, config: EchoConfig) -> dict[str, Any]:
        await context.progress(100)
        return {"echo": " ".join(config.words)}


TASK_HANDLERS = [Echo]

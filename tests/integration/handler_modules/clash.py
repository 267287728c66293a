"""A module whose handler claims a task type that is built in."""

from __future__ import annotations

from tests.integration.handler_modules.echo import Echo


class NotNoop(Echo):
    type = "noop"


TASK_HANDLERS = [NotNoop()]

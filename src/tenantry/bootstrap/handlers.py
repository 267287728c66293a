"""The task handlers a worker runs and the API accepts: the built-in ones, those installed
packages declare as Python entry points of the group ``tenantry.tasks``, and those of the
modules the setting ``task_modules`` names (their ``TASK_HANDLERS``). docs/tasks.md, "Write a
task handler"."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import cast

import msgspec

from tenantry.application.tasks import HandlerError, Registry, TaskHandler
from tenantry.application.tasks.handlers import builtin_handlers

ENTRY_POINT_GROUP = "tenantry.tasks"
# What a module of ``task_modules`` lists its handlers in.
MODULE_ATTRIBUTE = "TASK_HANDLERS"


class FoundHandler(msgspec.Struct, frozen=True):
    handler: TaskHandler
    # Where it came from, for `tenantry tasks list` and for errors.
    source: str


def find_handlers(modules: Sequence[str] = ()) -> list[FoundHandler]:
    """Every handler: built in, then from entry points (by name), then from ``modules``."""
    found = [FoundHandler(handler, "built in") for handler in builtin_handlers()]
    for point in _declared():
        package = f"{point.dist.name} {point.dist.version}" if point.dist else "unknown package"
        source = f"entry point {point.name} = {point.value} ({package})"
        try:
            loaded = point.load()
        except Exception as error:
            raise HandlerError(f"{source} cannot be loaded: {error!r}") from error
        found += [FoundHandler(handler, source) for handler in _handlers(loaded, source)]
    for name in modules:
        source = f"module {name} (TENANTRY_TASK_MODULES)"
        try:
            module = importlib.import_module(name)
        except Exception as error:
            raise HandlerError(f"{source} cannot be imported: {error!r}") from error
        listed = getattr(module, MODULE_ATTRIBUTE, None)
        if not isinstance(listed, list | tuple):
            raise HandlerError(f"{source} has no {MODULE_ATTRIBUTE} list of handlers.")
        found += [FoundHandler(handler, source) for handler in _handlers(listed, source)]
    return found


@cache
def _declared() -> tuple[EntryPoint, ...]:
    """The group's entry points, by name. Finding them reads every installed package's metadata
    (about 10 ms, each time an app or a worker is made); what is installed stays put while a
    process runs."""
    return tuple(sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda point: point.name))


def handler_registry(modules: Sequence[str] = ()) -> Registry:
    """The registry of every handler found; HandlerError names the one that does not fit."""
    return registry_of(find_handlers(modules))


def registry_of(found: Sequence[FoundHandler]) -> Registry:
    """The registry of these handlers; HandlerError names the one that does not fit, with
    where every handler came from."""
    try:
        return Registry([item.handler for item in found])
    except HandlerError as error:
        sources = "; ".join(f"{item.handler.type}: {item.source}" for item in found)
        raise HandlerError(f"{error} Handlers found: {sources}") from None


def _handlers(loaded: object, source: str) -> Iterable[TaskHandler]:
    """A handler class (made with no arguments), a handler, or a list of either; the registry
    checks that each is a handler."""
    items = loaded if isinstance(loaded, list | tuple) else [loaded]
    for item in items:
        if isinstance(item, type):
            try:
                item = item()
            except Exception as error:
                raise HandlerError(
                    f"{source}: {item.__qualname__}() cannot be made: {error!r}"
                ) from error
        yield cast("TaskHandler", item)

"""Use-case providers, derived rather than listed.

A route handler asks for a use case by name and type (``create_project:
NamedDependency[CreateProject]``); the use case's constructor names the ports it needs
(``uow: UnitOfWork, clock: Clock``). From those two facts each provider is built here, so a new
use case needs no wiring line: its class and the handler that calls it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from functools import cache
from operator import attrgetter
from types import UnionType
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    NamedTuple,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

from litestar import Request
from litestar.di import Dependency, NamedDependency, Provide
from litestar.handlers import HTTPRouteHandler

from tenantry.application.auth import Identity
from tenantry.application.files import Files
from tenantry.application.tasks import Registry
from tenantry.domain.auth import Actor
from tenantry.domain.erasure import ErasureQueue
from tenantry.domain.ports import Clock, UnitOfWork
from tenantry.domain.secrets import SecretStore
from tenantry.domain.tasks import JobQueue, TaskLimits
from tenantry.domain.usage import UsageMeter
from tenantry.domain.webhooks import WebhookPolicy
from tenantry.infrastructure.db.uow import SqlUnitOfWork

if TYPE_CHECKING:
    from tenantry.bootstrap import Container

APPLICATION = "tenantry.application."
# Ports built around the request's unit of work, and ports the container holds once.
PER_REQUEST: dict[Any, Callable[[Container, UnitOfWork], Any]] = {
    UnitOfWork: lambda _, uow: uow,
    Identity: lambda container, uow: container.identity(uow),
    Files: lambda container, uow: container.files(uow),
}
SHARED: dict[Any, Callable[[Container], Any]] = {
    Clock: attrgetter("clock"),
    ErasureQueue: attrgetter("erasure_queue"),
    JobQueue: attrgetter("job_queue"),
    Registry: attrgetter("registry"),
    TaskLimits: attrgetter("task_limits"),
    UsageMeter: attrgetter("usage"),
    SecretStore: attrgetter("secrets"),
    WebhookPolicy: attrgetter("webhook_policy"),
}


class Wanted(NamedTuple):
    use_case: type
    with_actor: bool  # a handler asking for it also takes the signed-in Actor


def use_cases_asked_for(controllers: Iterable[type]) -> dict[str, Wanted]:
    """Every ``name: NamedDependency[UseCase]`` of the controllers' route handlers, where the
    use case is a class of the application layer."""
    wanted: dict[str, Wanted] = {}
    for controller in controllers:
        for name, asked in _asked_by(controller).items():
            _ask(wanted, name, asked)
    return wanted


def _ask(wanted: dict[str, Wanted], name: str, asked: Wanted) -> None:
    # One provider serves every handler asking for the name: it takes the actor if any does.
    earlier = wanted.get(name)
    wanted[name] = Wanted(asked.use_case, asked.with_actor or bool(earlier and earlier.with_actor))


@cache
def _asked_by(controller: type) -> dict[str, Wanted]:
    # Read once per process: the type hints of every handler are a tenth of an app's creation.
    wanted: dict[str, Wanted] = {}
    for handler in vars(controller).values():
        if not isinstance(handler, HTTPRouteHandler):
            continue
        hints = get_type_hints(handler.fn, include_extras=True)
        with_actor = any(Actor in get_args(hint) for hint in hints.values())
        for name, hint in hints.items():
            if get_origin(hint) is not Annotated:
                continue
            kind, *extras = get_args(hint)
            named = any(isinstance(extra, Dependency) and extra.kind == "named" for extra in extras)
            if named and isinstance(kind, type) and kind.__module__.startswith(APPLICATION):
                _ask(wanted, name, Wanted(kind, with_actor))
    return wanted


# The app state's key of the Container its requests' use cases are built from.
CONTAINER = "container"


def use_case_providers(controllers: Iterable[type]) -> dict[type, dict[str, Provide]]:
    """Each controller's providers, to be given to it alone: Litestar checks every dependency
    a handler can see against every other once per handler, so use cases given to the whole
    app made its creation grow with their number squared (a sixth of it at 58 use cases).

    Built once per process and shared by its apps: a provider finds the container in the
    state of the app serving the request, and Litestar keeps what it parsed of a provider's
    signature on the provider, so only the first app (of a test process, say) parses them."""
    return _providers(tuple(controllers))


@cache
def _providers(controllers: tuple[type, ...]) -> dict[type, dict[str, Provide]]:
    wanted = use_cases_asked_for(controllers)
    built = {name: provider(asked) for name, asked in wanted.items()}
    return {
        controller: {name: built[name] for name in _asked_by(controller)}
        for controller in controllers
    }


def provider(wanted: Wanted) -> Provide:
    """Builds the use case per request from the ports its constructor asks for, taken from the
    container in the app's state (under :data:`CONTAINER`)."""
    use_case = wanted.use_case
    ports = constructor_ports(use_case)
    shared = {name: SHARED[port] for name, port in ports.items() if port in SHARED}
    per_request = {name: PER_REQUEST[port] for name, port in ports.items() if port in PER_REQUEST}

    def public(request: Request[Any, Any, Any]) -> Any:
        state = request.app.state
        container: Container = state[CONTAINER]
        arguments = {name: port(container) for name, port in shared.items()}
        if per_request:
            # The request's own session: the one the bearer check used, so one connection
            # serves both.
            uow = SqlUnitOfWork(container.alchemy.provide_session(state, request.scope))
            arguments.update({name: port(container, uow) for name, port in per_request.items()})
        return use_case(**arguments)

    def signed_in(
        request: Request[Actor, Any, Any],
        actor: NamedDependency[Actor],  # noqa: ARG001
    ) -> Any:
        # The handler takes the actor and the use case; two dependencies with none between them
        # are resolved in an anyio task group, several per cent of a small read. Depending on
        # the actor, Litestar resolves them one after the other.
        return public(request)

    return Provide(signed_in if wanted.with_actor else public, sync_to_thread=False)


@cache
def constructor_ports(use_case: type) -> dict[str, Any]:
    """The constructor's parameters and the ports they are, every required one known."""
    constructor = next(vars(cls)["__init__"] for cls in use_case.__mro__ if "__init__" in vars(cls))
    hints = get_type_hints(constructor)
    ports = {}
    for name, parameter in inspect.signature(use_case).parameters.items():
        port = hints.get(name)
        # An optional port (``uow: UnitOfWork | None = None``, for callers without one) is
        # provided as the port itself.
        if get_origin(port) in (Union, UnionType):
            port = next((arg for arg in get_args(port) if arg is not type(None)), port)
        if port in PER_REQUEST or port in SHARED:
            ports[name] = port
        elif parameter.default is inspect.Parameter.empty:
            raise TypeError(
                f"{use_case.__qualname__}: no provider knows the port {name}: {port!r}; "
                "add it to PER_REQUEST or SHARED in bootstrap/providers.py"
            )
    return ports

"""The Litestar application factory. Adapters and use cases arrive from bootstrap as dependencies."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import version
from typing import Any

from litestar import Controller, Litestar
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.handlers import HTTPRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme, Tag
from litestar.plugins import PluginProtocol
from litestar.routes import HTTPRoute

from tenantry.application.usage import NoUsage
from tenantry.config import Settings
from tenantry.domain.usage import UsageMeter
from tenantry.presentation.api_keys import ApiKeyController
from tenantry.presentation.audit import AdminAuditController, AuditController
from tenantry.presentation.auth import AuthController
from tenantry.presentation.bodies import JSONBodyRequest
from tenantry.presentation.docs import SwaggerUI, docs_assets
from tenantry.presentation.documents import DocumentController
from tenantry.presentation.erasure import AdminErasureController, ErasureController
from tenantry.presentation.errors import exception_handlers
from tenantry.presentation.files import FileController
from tenantry.presentation.health import HealthController, ReadinessChecks, ServiceInfo
from tenantry.presentation.keys import AdminKeyController
from tenantry.presentation.metrics import MetricsController, RequestMetrics
from tenantry.presentation.middleware import AccessLog, RequestContextMiddleware
from tenantry.presentation.openapi import DescribedStructs
from tenantry.presentation.projects import ProjectController
from tenantry.presentation.security import (
    AuthenticatorFactory,
    CredentialsMiddleware,
    provide_actor,
)
from tenantry.presentation.tasks import TaskController
from tenantry.presentation.tenant_export import TenantExportController
from tenantry.presentation.tenants import AdminTenantController, TenantController
from tenantry.presentation.usage import AdminUsageController, CountedRequests, UsageController
from tenantry.presentation.users import UserController
from tenantry.presentation.webhooks import WebhookController

DOCS_PATH = "/docs"
SERVICE_NAME = "Tenantry"

CONTROLLERS = [
    HealthController,
    TenantController,
    AuthController,
    ApiKeyController,
    UserController,
    AdminTenantController,
    AdminKeyController,
    ProjectController,
    DocumentController,
    FileController,
    TaskController,
    AuditController,
    AdminAuditController,
    TenantExportController,
    AdminErasureController,
    ErasureController,
    UsageController,
    AdminUsageController,
    WebhookController,
]


def with_dependencies(
    controller: type[Controller], provided: Mapping[str, Provide]
) -> type[Controller]:
    """The controller, given its own use cases' providers for this app. A subclass, not a
    router around it: Litestar deep-copies a router it registers, handlers and all: a fifth of
    an app's creation."""
    # Read from the class's own namespace: Controller's is a slot, not a mapping.
    own = vars(controller).get("dependencies", {})
    return type(
        controller.__name__,
        (controller,),
        {"__module__": controller.__module__, "dependencies": {**own, **provided}},
    )


def create_app(
    settings: Settings,
    *,
    dependencies: Mapping[type, Mapping[str, Provide]],
    readiness_checks: ReadinessChecks,
    authenticator: AuthenticatorFactory,
    access_log: AccessLog,
    metrics: RequestMetrics | None = None,
    usage: UsageMeter | None = None,
    plugins: Sequence[PluginProtocol] = (),
    on_startup: Sequence[Callable[[], Any]] = (),
    on_shutdown: Sequence[Callable[[], Any]] = (),
) -> Litestar:
    counted = CountedRequests(usage) if usage is not None else None
    service_info = ServiceInfo(
        name=SERVICE_NAME,
        version=version("tenantry"),
        environment=settings.env,
        check_timeout=settings.ready_check_timeout,
    )
    app = Litestar(
        route_handlers=[
            *(
                with_dependencies(controller, dependencies.get(controller, {}))
                for controller in CONTROLLERS
            ),
            *([MetricsController] if metrics else []),
            docs_assets(DOCS_PATH),
        ],
        dependencies={
            "readiness_checks": Provide(
                lambda: readiness_checks, use_cache=True, sync_to_thread=False
            ),
            "request_metrics": Provide(lambda: metrics, use_cache=True, sync_to_thread=False),
            "usage_meter": Provide(
                lambda: usage or NoUsage(), use_cache=True, sync_to_thread=False
            ),
            "service_info": Provide(lambda: service_info, use_cache=True, sync_to_thread=False),
            "actor": Provide(provide_actor, sync_to_thread=False),
        },
        plugins=[*plugins, DescribedStructs()],
        middleware=[
            DefineMiddleware(
                CredentialsMiddleware,
                authenticator=authenticator,
                exclude=[f"^{DOCS_PATH}"],
                usage=counted,
            )
        ],
        exception_handlers=exception_handlers,
        request_class=JSONBodyRequest,
        cors_config=CORSConfig(
            allow_origins=settings.cors_origins,
            allow_headers=[
                "Authorization",
                "Content-Type",
                "X-API-Key",
                "X-Request-ID",
                "If-Match",
            ],
            expose_headers=["X-Request-ID", "Retry-After", "ETag", "Location"],
            allow_credentials=False,
            max_age=600,
        )
        if settings.cors_origins
        else None,
        openapi_config=OpenAPIConfig(
            title=SERVICE_NAME,
            version=service_info.version,
            description="A multi-tenant SaaS API foundation.",
            path=DOCS_PATH,
            render_plugins=[SwaggerUI(DOCS_PATH)],
            components=Components(
                security_schemes={
                    "BearerToken": SecurityScheme(
                        type="http", scheme="bearer", bearer_format="JWT"
                    ),
                    "ApiKey": SecurityScheme(
                        type="apiKey", name="X-API-Key", security_scheme_in="header"
                    ),
                }
            ),
            security=[{"BearerToken": []}, {"ApiKey": []}],
            operation_id_creator=operation_id,
            tags=TAGS,
        ),
        on_startup=list(on_startup),
        on_shutdown=list(on_shutdown),
        request_max_body_size=settings.max_request_body_bytes,
        # Our own handlers log errors with the request id; Litestar's logging config would
        # replace the structlog pipeline configured at start.
        logging_config=None,
        debug=False,
    )
    # Wrapping the whole handler (not Litestar middleware) so routing 404s and 405s get
    # request ids, security headers and access lines too, and are counted.
    app.asgi_handler = RequestContextMiddleware(
        app.asgi_handler,
        access_log=access_log,
        docs_path=DOCS_PATH,
        production=settings.is_production,
        metrics=metrics,
        usage=counted,
        allowed_methods=allowed_methods(app),
    )
    return app


# The API's sections, in the order a reader meets them.
TAGS = [
    Tag(name="service", description="Liveness, readiness and what is running."),
    Tag(name="tenants", description="Creating a tenant with its owner."),
    Tag(
        name="auth",
        description="Sign-in, token refresh, sign-out, self-signup, the signed-in user and "
        "their API keys.",
    ),
    Tag(name="users", description="A tenant's users and their roles (owners and admins)."),
    Tag(name="projects", description="A tenant's projects: paginated, ETag-versioned."),
    Tag(name="documents", description="The documents of a project."),
    Tag(
        name="files",
        description="Uploads streamed to storage, ranged downloads, the tenant's quota.",
    ),
    Tag(
        name="tasks",
        description="Background tasks: submitted, followed (polling or server-sent events), "
        "cancelled.",
    ),
    Tag(
        name="webhooks",
        description="Endpoints that receive a tenant's events, signed the Standard Webhooks "
        "way, and their deliveries.",
    ),
    Tag(name="audit", description="Who changed what in a tenant (owners and admins)."),
    Tag(name="usage", description="What a tenant used, per UTC day, and its daily limits."),
    Tag(name="governance", description="A tenant's export and its erasure."),
    Tag(
        name="platform administration",
        description="Tenants, signing keys, erasures, audit and usage across tenants "
        "(platform superusers).",
    ),
]


def operation_id(handler: HTTPRouteHandler, _method: str, _path: list[Any]) -> str:
    """A handler's name in camelCase (``list_projects``: ``listProjects``), what generated
    clients name their methods after; a handler whose name says less sets ``operation_id``.
    Litestar refuses two operations with one id."""
    first, *rest = handler.handler_name.split("_")
    return first + "".join(word.capitalize() for word in rest)


def allowed_methods(app: Litestar) -> dict[str, bytes]:
    """Each route's path template and its methods, as an Allow header says them."""
    return {
        route.path_format: ", ".join(sorted(route.methods)).encode()
        for route in app.routes
        if isinstance(route, HTTPRoute)
    }

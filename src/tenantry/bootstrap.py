"""The composition root: the one place that wires adapters into use cases.

The API, the CLI (and later the workers) build what they need from here.
"""

from __future__ import annotations

from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar
from litestar.di import NamedDependency, Provide
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.application.tenants import CreateTenant
from tenantry.config import Settings, load_settings
from tenantry.infrastructure.cache import redis as redis_cache
from tenantry.infrastructure.db import database
from tenantry.infrastructure.db.uow import SqlUnitOfWork
from tenantry.infrastructure.observability.logging import configure_logging
from tenantry.presentation import app as web


def provide_create_tenant(db_session: NamedDependency[AsyncSession]) -> CreateTenant:
    return CreateTenant(SqlUnitOfWork(db_session))


def create_app(settings: Settings | None = None) -> Litestar:
    """The API, wired to PostgreSQL and Redis from ``settings`` (the environment by default)."""
    settings = settings or load_settings()
    configure_logging(settings)
    alchemy = database.alchemy_config(settings)
    redis = redis_cache.create_redis(settings)
    return web.create_app(
        settings,
        plugins=[SQLAlchemyPlugin(config=alchemy)],
        dependencies={
            "create_tenant": Provide(provide_create_tenant, sync_to_thread=False),
        },
        readiness_checks={
            "database": lambda: database.ping(alchemy.get_engine()),
            "redis": lambda: redis_cache.ping(redis),
        },
        on_shutdown=[redis.aclose],
    )

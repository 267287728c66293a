"""Engine and session configuration, shared by the API, workers and CLI."""

from __future__ import annotations

import time

from advanced_alchemy.extensions.litestar import (
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tenantry.config import Settings
from tenantry.infrastructure.db.models import metadata


def alchemy_config(settings: Settings) -> SQLAlchemyAsyncConfig:
    return SQLAlchemyAsyncConfig(
        connection_string=settings.async_database_url,
        metadata=metadata,
        create_all=False,
        # Errors are mapped once, in presentation/errors.py.
        set_default_exception_handler=False,
        session_config=AsyncSessionConfig(expire_on_commit=False, autoflush=False),
        engine_config=EngineConfig(
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout,
            pool_pre_ping=False,
            pool_recycle=1800,
            echo=settings.log_sql,
            # Statement parameters hold password hashes and token digests: never in errors or logs.
            hide_parameters=True,
            connect_args={
                "timeout": settings.db_connect_timeout,
                "server_settings": {"application_name": "tenantry"},
            },
        ),
    )


async def role_problems(engine: AsyncEngine) -> list[str]:
    """Why the connected role would bypass row level security, if it would."""
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "select r.rolsuper, r.rolbypassrls, "
                    "(select string_agg(tablename, ', ' order by tablename) from pg_tables "
                    " where schemaname = current_schema() and tableowner = current_user) "
                    "from pg_roles r where r.rolname = current_user"
                )
            )
        ).one()
    superuser, bypass, owned = row
    problems = []
    if superuser:
        problems.append("is a superuser")
    if bypass:
        problems.append("has BYPASSRLS")
    if owned:
        problems.append(f"owns tables ({owned})")
    return problems


async def ping(engine: AsyncEngine) -> float:
    """Run one round trip; return its latency in milliseconds."""
    started = time.perf_counter()
    async with engine.connect() as connection:
        await connection.execute(text("select 1"))
    return (time.perf_counter() - started) * 1000

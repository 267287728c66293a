"""The composition root: the one place that wires adapters into use cases.

The API, the CLI and the workers build what they need from a :class:`Container`; the use cases
a request needs come from ``providers``, the secrets read at start-up from ``secrets``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import structlog
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from arq.worker import Worker
from litestar import Litestar
from litestar.types import Scope
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from tenantry.application.audit import PurgeAuditEvents
from tenantry.application.auth import Authenticate, AuthPolicy, Identity
from tenantry.application.erasure import ResumeErasures, RunErasure
from tenantry.application.files import Files, SweepFiles
from tenantry.application.tasks import Registry
from tenantry.application.tasks.handlers import builtin_handlers
from tenantry.application.tasks.maintenance import ReapTasks, ReconcileTasks
from tenantry.application.tasks.runner import RunTask
from tenantry.application.usage import FoldUsage, NoUsage, ReportBusiestTenants
from tenantry.application.webhooks import DeliverWebhooks, PurgeWebhookDeliveries
from tenantry.bootstrap import providers
from tenantry.bootstrap.handlers import handler_registry
from tenantry.bootstrap.secrets import create_secrets, load_secrets
from tenantry.config import Settings, load_settings
from tenantry.domain.errors import Unavailable
from tenantry.domain.files import FilePolicy
from tenantry.domain.ports import UnitOfWork
from tenantry.domain.secrets import DATABASE, SecretNotFound
from tenantry.domain.tasks import TaskLimits
from tenantry.domain.webhooks import WebhookPolicy
from tenantry.infrastructure import cpus
from tenantry.infrastructure.cache import redis as redis_cache
from tenantry.infrastructure.cache.rate_limit import RedisRateLimiter
from tenantry.infrastructure.cache.usage import RedisUsageBuffer, RedisUsageMeter
from tenantry.infrastructure.clock import SystemClock
from tenantry.infrastructure.db import citus, database
from tenantry.infrastructure.db.rls import APP_ROLE
from tenantry.infrastructure.db.uow import SqlUnitOfWork
from tenantry.infrastructure.http.webhooks import HttpWebhookSender
from tenantry.infrastructure.jobs.queue import ArqErasureQueue, ArqJobQueue
from tenantry.infrastructure.jobs.webhooks import WebhookLoop
from tenantry.infrastructure.jobs.worker import build_worker
from tenantry.infrastructure.observability import metrics
from tenantry.infrastructure.observability.logging import AccessLines, configure_logging
from tenantry.infrastructure.security.passwords import Argon2PasswordHasher
from tenantry.infrastructure.security.tokens import JwtAccessTokens, SigningKeys
from tenantry.infrastructure.storage.local import LocalDiskStorage
from tenantry.presentation import app as web
from tenantry.presentation.tasks import TaskTypesSchema

if TYPE_CHECKING:
    from tenantry.infrastructure.storage.s3 import S3Storage

log = structlog.stdlib.get_logger("tenantry.bootstrap")
# An unfinished erasure with no batch for this long has lost its worker (each batch beats).
ERASURE_QUIET = timedelta(minutes=2)


class Container:
    """The long-lived adapters of one process, built once from settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.alchemy = database.alchemy_config(settings, password=self.database_password)
        self.redis = redis_cache.create_redis(settings)
        self.clock = SystemClock()
        self.passwords = Argon2PasswordHasher(
            time_cost=settings.password_time_cost,
            memory_cost_kib=settings.password_memory_kib,
            parallelism=settings.password_parallelism,
            max_concurrency=settings.password_hash_concurrency,
        )
        self.secrets = create_secrets(settings)
        self.signing_keys = SigningKeys(
            self.secrets, refresh_interval=settings.keyring_refresh_seconds
        )
        self.tokens = JwtAccessTokens(
            self.signing_keys, ttl=timedelta(seconds=settings.access_token_ttl_seconds)
        )
        self.limiter = RedisRateLimiter(self.redis)
        self.storage = create_storage(settings)
        self.job_queue = ArqJobQueue(
            settings.required("redis_url"),
            queue_name=settings.task_queue_name,
            timeout=settings.db_connect_timeout,
            window=settings.task_dispatch_window,
            running_limit=settings.task_max_running_per_tenant,
        )
        self.erasure_queue = ArqErasureQueue(self.job_queue)
        self.registry = handler_registry(settings.task_modules)
        self.task_limits = TaskLimits(
            pending=settings.task_max_pending_per_tenant,
            running=settings.task_max_running_per_tenant,
        )
        self.usage: RedisUsageMeter | NoUsage = (
            RedisUsageMeter(
                self.redis, self.clock, interval=timedelta(seconds=settings.usage_flush_seconds)
            )
            if settings.usage_metering
            else NoUsage()
        )
        self.usage_gauges = metrics.PrometheusUsageGauges()
        self.webhook_policy = webhook_policy(settings)
        # Made by the first worker of the process: the API sends no webhook itself.
        self.webhook_sender: HttpWebhookSender | None = None
        self.file_policy = FilePolicy(
            max_bytes=settings.upload_max_bytes,
            quota_bytes=settings.tenant_quota_bytes,
            allowed_types=frozenset(settings.upload_allowed_types),
            min_width=settings.image_min_width,
            min_height=settings.image_min_height,
            max_pixels=settings.image_max_pixels,
        )
        self.policy = AuthPolicy(
            refresh_ttl=timedelta(days=settings.refresh_token_ttl_days),
            login_attempts_per_account=settings.login_attempts_per_account,
            login_attempts_per_address=settings.login_attempts_per_address,
            login_window_seconds=settings.login_window_seconds,
            register_attempts_per_address=settings.register_attempts_per_address,
            register_window_seconds=settings.register_window_seconds,
        )

    def files(self, uow: UnitOfWork) -> Files:
        return Files(uow, storage=self.storage, clock=self.clock, policy=self.file_policy)

    def worker(self, *, handle_signals: bool, completion_wait: timedelta = timedelta(0)) -> Worker:
        """An arq worker running this process's tasks, sharing its settings and adapters."""
        settings = self.settings
        run = RunTask(
            units=self.unit_of_work,
            registry=self.registry,
            storage=self.storage,
            clock=self.clock,
            file_policy=self.file_policy,
            max_attempts=settings.task_max_attempts,
            backoff=timedelta(seconds=settings.task_retry_backoff_seconds),
            heartbeat=timedelta(seconds=settings.task_heartbeat_seconds),
            metrics=metrics.PrometheusTaskMetrics(),
            usage=self.usage,
        )
        reap = ReapTasks(
            units=self.unit_of_work,
            queue=self.job_queue,
            clock=self.clock,
            stale_after=timedelta(seconds=3 * settings.task_heartbeat_seconds),
            max_attempts=settings.task_max_attempts,
        )

        async def sweep() -> dict[str, int]:
            async with self.unit_of_work() as uow:
                report = await SweepFiles(self.files(uow))(
                    retention=timedelta(days=settings.file_retention_days),
                    orphan_age=timedelta(hours=1),
                )
            return msgspec.structs.asdict(report)

        self.webhook_sender = self.webhook_sender or HttpWebhookSender(
            allowed_networks=settings.webhook_networks,
            allow_http=settings.webhook_http,
            timeout=settings.webhook_timeout_seconds,
        )
        deliver = DeliverWebhooks(
            units=self.unit_of_work,
            sender=self.webhook_sender,
            clock=self.clock,
            policy=self.webhook_policy,
        )
        purge_deliveries = partial(
            PurgeWebhookDeliveries(units=self.unit_of_work, clock=self.clock),
            timedelta(days=settings.webhook_delivery_retention_days),
        )
        reconcile = ReconcileTasks(
            units=self.unit_of_work,
            queue=self.job_queue,
            clock=self.clock,
            stale_after=timedelta(seconds=30),
        )
        return build_worker(
            redis_url=settings.required("redis_url"),
            queue_name=settings.task_queue_name,
            run=run,
            reconcile_pending=reconcile,
            reap_stranded=reap,
            sweep_files=sweep,
            purge_audit=self.purge_audit_events,
            erase=self.run_erasure(),
            resume_erased=ResumeErasures(
                units=self.unit_of_work,
                queue=self.erasure_queue,
                clock=self.clock,
                quiet=ERASURE_QUIET,
            ),
            fold_usage=self.fold_usage,
            webhooks=WebhookLoop(deliver, poll=settings.webhook_poll_seconds),
            purge_deliveries=purge_deliveries,
            concurrency=settings.worker_concurrency,
            timeout=timedelta(seconds=settings.task_timeout_seconds),
            max_attempts=settings.task_max_attempts,
            dispatch_window=settings.task_dispatch_window,
            running_limit=settings.task_max_running_per_tenant,
            handle_signals=handle_signals,
            completion_wait=completion_wait,
        )

    def run_erasure(self) -> RunErasure:
        """The erasure job's use case: running tasks of the tenant get as long to stop as the
        reaper gives a silent one."""
        return RunErasure(
            units=self.unit_of_work,
            storage=self.storage,
            clock=self.clock,
            settle=timedelta(seconds=3 * self.settings.task_heartbeat_seconds),
        )

    async def fold_usage(self) -> int:
        """The worker's usage step: fold what every process counted, then show the busiest
        tenants on the dashboards."""
        buffer = RedisUsageBuffer(self.redis)
        folded = await FoldUsage(self.unit_of_work, buffer)()
        await ReportBusiestTenants(self.unit_of_work, buffer, self.usage_gauges, self.clock)()
        return folded

    async def purge_audit_events(self) -> int:
        """Purge audit events older than ``audit_retention_days``: the worker's daily job and
        `tenantry audit purge`."""
        async with self.unit_of_work() as uow:
            return await PurgeAuditEvents(uow, self.clock)(
                retention=timedelta(days=self.settings.audit_retention_days)
            )

    def identity(self, uow: UnitOfWork) -> Identity:
        return Identity(
            uow,
            passwords=self.passwords,
            tokens=self.tokens,
            limiter=self.limiter,
            clock=self.clock,
            policy=self.policy,
        )

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        """A unit of work outside a request (CLI, workers)."""
        async with self.alchemy.get_session() as session:
            yield SqlUnitOfWork(session)

    async def database_password(self) -> str | None:
        """Read at each new connection (through the cache): a rotated password in Vault is
        used by the next connection the pool opens, with no restart."""
        try:
            password = (await self.secrets.read(DATABASE)).data.get("password")
        except SecretNotFound:
            password = None
        return password or make_url(self.settings.required("database_url")).password

    async def start(self) -> None:
        await load_secrets(self.settings, self.secrets, self.clock, self.storage)
        if not isinstance(self.storage, LocalDiskStorage):
            await self.storage.start()
        if isinstance(self.usage, RedisUsageMeter):
            await self.usage.start()

    async def close(self) -> None:
        # What was counted since the last flush goes to Redis before the client closes.
        if isinstance(self.usage, RedisUsageMeter):
            await self.usage.stop()
        await self.secrets.close()
        if self.webhook_sender is not None:
            await self.webhook_sender.close()
        await self.job_queue.close()
        await self.redis.aclose()
        self.passwords.close()
        if not isinstance(self.storage, LocalDiskStorage):
            await self.storage.close()


def webhook_policy(settings: Settings) -> WebhookPolicy:
    return WebhookPolicy(
        lease=timedelta(seconds=settings.webhook_lease_seconds),
        retry_first=timedelta(seconds=settings.webhook_retry_seconds),
        retry_max=timedelta(seconds=settings.webhook_retry_max_seconds),
        give_up_after=timedelta(seconds=settings.webhook_give_up_after_seconds),
        disable_after=timedelta(seconds=settings.webhook_disable_after_seconds),
        disable_failures=settings.webhook_disable_failures,
        allow_http=settings.webhook_http,
    )


def create_storage(settings: Settings) -> LocalDiskStorage | S3Storage:
    if settings.storage_backend == "s3":
        # Imported only here: boto's and aiohttp's modules are a quarter of a process's start.
        from tenantry.infrastructure.storage.s3 import S3Storage

        return S3Storage(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            part_size=settings.s3_part_size_mib * 1024 * 1024,
            presign_seconds=settings.s3_presign_seconds,
        )
    return LocalDiskStorage(Path(settings.files_dir or Path(settings.data_dir) / "files"))


async def check_database_role(container: Container) -> None:
    """Refuse to serve in production as a role that row level security does not hold, and
    anywhere on a Citus coordinator that would not carry the tenant to the workers' shards.

    Outside production an unreachable database only skips the check, so /ready can report it.
    """
    try:
        problems = await database.role_problems(container.alchemy.get_engine())
        cluster = await citus.citus_problems(container.alchemy.get_engine())
    except (Unavailable, SQLAlchemyError) as error:
        if container.settings.is_production:
            raise
        log.warning("database role not checked: database unreachable", error=type(error).__name__)
        return
    if cluster:
        # Every tenant's writes would fail and its reads find nothing, in any environment.
        raise RuntimeError(f"refusing to start: {cluster[0]}")
    if not problems:
        return
    message = "the database role " + " and ".join(problems) + ": row level security is bypassed"
    if container.settings.is_production:
        raise RuntimeError(f"refusing to start: {message}; connect as {APP_ROLE}")
    log.warning("database role bypasses row level security", problems=problems)


class InProcessWorker:
    """A worker beside the API in one process (`tenantry dev`): jobs run end to end with no
    second command."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self.task: asyncio.Task[None] | None = None
        self.worker: Worker | None = None

    async def start(self) -> None:
        self.worker = self.container.worker(handle_signals=False)
        self.task = asyncio.create_task(self.worker.async_run())

    async def stop(self) -> None:
        if self.worker is not None:
            try:
                await self.worker.close()
            except asyncio.CancelledError:
                if (current := asyncio.current_task()) is not None and current.cancelling():
                    raise
                # arq cancels the jobs still running and gathers them: their cancellation
                # comes back here, before arq closed its pool.
                await self.worker.pool.close(close_connection_pool=True)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def run_worker(settings: Settings) -> None:
    """`tenantry worker`: run tasks until SIGINT or SIGTERM, then finish the running ones."""
    container = Container(settings)
    await container.start()
    worker = container.worker(
        handle_signals=True, completion_wait=timedelta(seconds=settings.task_timeout_seconds)
    )
    port = settings.worker_metrics_port
    stop_metrics = metrics.serve_worker_metrics(settings.host, port) if port else None
    try:
        await worker.async_run()
    except asyncio.CancelledError:
        pass  # arq ends its main task this way once a signal came and running jobs finished
    finally:
        if stop_metrics is not None:
            stop_metrics()
        await worker.close()
        await container.close()
        await container.alchemy.get_engine().dispose()


def create_app(
    settings: Settings | None = None,
    *,
    with_worker: bool = False,
    container: Container | None = None,
    freeze_heap: bool = False,
    pin_cpu: bool = False,
) -> Litestar:
    """The API, wired to PostgreSQL and Redis from ``settings`` (the environment by default);
    ``with_worker`` runs a task worker in the same process; ``freeze_heap`` is for a process
    that serves until it stops (see :func:`freeze_startup_heap`); ``pin_cpu`` pins it to a CPU
    of its own (see :func:`pin_to_a_cpu`)."""
    settings = settings or load_settings()
    configure_logging(settings)
    if pin_cpu:
        pin_to_a_cpu(settings)
    container = container or Container(settings)
    worker = InProcessWorker(container) if with_worker else None
    engine = container.alchemy
    # Several API processes share their series through files; each keeps its pool figure fresh.
    pool_watcher = (
        metrics.PoolWatcher(engine.get_engine())
        if settings.metrics_enabled and metrics.multiprocess_dir()
        else None
    )

    def authenticator(scope: Scope) -> Authenticate:
        # The request's own session: the handler's use case later reuses this connection.
        session = engine.provide_session(scope["app"].state, scope)
        return Authenticate(container.identity(SqlUnitOfWork(session)))

    app = web.create_app(
        settings,
        plugins=[SQLAlchemyPlugin(config=engine), TaskTypesSchema(container.registry)],
        dependencies=providers.use_case_providers(web.CONTROLLERS),
        readiness_checks={
            "database": lambda: database.ping(engine.get_engine()),
            "redis": lambda: redis_cache.ping(container.redis),
            "storage": container.storage.ping,
            "secrets": container.secrets.ping,
        },
        authenticator=authenticator,
        access_log=AccessLines(settings),
        usage=container.usage if settings.usage_metering else None,
        metrics=metrics.PrometheusRequestMetrics(engine.get_engine())
        if settings.metrics_enabled
        else None,
        on_startup=[
            container.start,
            partial(check_database_role, container),
            *([worker.start] if worker else []),
            *([pool_watcher.start] if pool_watcher else []),
            *([freeze_startup_heap] if freeze_heap else []),
        ],
        on_shutdown=[
            *([gc.unfreeze] if freeze_heap else []),
            *([pool_watcher.stop] if pool_watcher else []),
            *([worker.stop] if worker else []),
            container.close,
            # advanced-alchemy's lifespan disposes the engine of the first config made in a
            # process only (it looks for its default state key, which later configs may not
            # take): another app's connections would stay open until garbage collected.
            engine.get_engine().dispose,
        ],
    )
    app.state[providers.CONTAINER] = container
    return app


def openapi_document() -> bytes:
    """The HTTP contract as committed in docs/openapi.json (`tenantry openapi` writes it): the
    app's OpenAPI document, with the built-in task types only (installed packages add their
    own where they are installed). Built from placeholder settings: nothing is connected."""
    settings = load_settings(
        environ={},
        env_file=None,
        database_url="postgresql://tenantry@localhost/tenantry",
        redis_url="redis://localhost:6379/0",
        log_level="WARNING",
    )
    container = Container(settings)
    container.registry = Registry(builtin_handlers())
    schema = create_app(settings, container=container).openapi_schema.to_schema()
    return json.dumps(msgspec.to_builtins(schema), indent=2, ensure_ascii=False).encode() + b"\n"


def create_dev_app() -> Litestar:
    """`tenantry dev --reload`'s app, built afresh in each process uvicorn's reloader starts:
    the API and its worker, on the engines `tenantry dev` keeps running (the environment says
    where)."""
    return create_app(load_settings(), with_worker=True)


def create_served_app() -> Litestar:
    """The app a `tenantry serve` process runs, from the environment (uvicorn's factory)."""
    settings = load_settings()
    return create_app(settings, freeze_heap=True, pin_cpu=settings.cpu_pinning)


def pin_to_a_cpu(settings: Settings) -> None:
    """The process on one CPU, claimed among the API processes sharing its data directory,
    before the app starts any thread (see infrastructure/cpus.py)."""
    if not cpus.supported():
        log.warning("cpu pinning unsupported", platform=sys.platform)
        return
    cpu = cpus.pin_process(Path(settings.data_dir) / "cpus")
    log.info("api process pinned", cpu=cpu)


def freeze_startup_heap() -> None:
    """Take what start-up built (modules, mappers, the app: ~200k objects) out of the garbage
    collector's sight. Otherwise every full collection under load walks all of it again: a
    200 ms pause that was the p99 of a small read. Shutdown hands them back."""
    gc.collect()
    gc.freeze()

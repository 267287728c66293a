"""The arq worker: runs tasks by id with the request's context in every log line."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

import structlog
from arq import Retry, cron
from arq.connections import RedisSettings
from arq.constants import in_progress_key_prefix
from arq.worker import Worker
from redis.exceptions import RedisError

from tenantry.infrastructure.jobs.queue import Dispatcher, wake_channel
from tenantry.infrastructure.jobs.webhooks import WebhookLoop
from tenantry.infrastructure.observability.metrics import WorkerGauges

RunTask = Callable[[UUID, UUID], Awaitable[timedelta | None]]
Reconcile = Callable[[], Awaitable[int]]
log = structlog.stdlib.get_logger("tenantry.worker")


async def run_task(
    ctx: dict[str, Any], tenant_id: str, task_id: str, request_id: str | None, user_id: str | None
) -> None:
    # arq's count of this job's deliveries, for the logs only: a re-enqueued task starts a new
    # job at 1 again, so the task row counts its attempts.
    job_try: int = ctx["job_try"]
    with structlog.contextvars.bound_contextvars(
        request_id=request_id,
        tenant_id=tenant_id,
        user_id=user_id,
        task_id=task_id,
        job_try=job_try,
    ):
        log.info("task attempt starting")
        retry = await ctx["run"](UUID(tenant_id), UUID(task_id))
        if retry is not None:
            log.info("task attempt failed; retrying", retry_in_s=retry.total_seconds())
            raise Retry(defer=retry)
        log.info("task attempt done")


async def erase_tenant(ctx: dict[str, Any], erasure_id: str, request_id: str | None) -> None:
    with structlog.contextvars.bound_contextvars(request_id=request_id, erasure_id=erasure_id):
        log.info("tenant erasure starting")
        erasure = await ctx["erase"](UUID(erasure_id))
        if erasure is None:
            log.warning("tenant erasure not found")
            return
        progress = erasure.progress
        log.info(
            "tenant erasure finished",
            tenant_id=str(erasure.tenant_id),
            state=erasure.state,
            rows=progress.rows,
            objects=progress.objects,
            tables=progress.tables,
        )


async def resume_erasures(ctx: dict[str, Any]) -> None:
    for erasure in await ctx["resume_erasures"]():
        log.warning(
            "tenant erasure stalled; enqueued again",
            erasure_id=str(erasure.id),
            tenant_id=str(erasure.tenant_id),
            state=erasure.state,
        )


async def reconcile(ctx: dict[str, Any]) -> None:
    if count := await ctx["reconcile"]():
        log.info("re-enqueued stale pending tasks", count=count)


async def reap(ctx: dict[str, Any]) -> None:
    if count := await ctx["reap"]():
        log.warning("reaped tasks stranded by a dead worker", count=count)


async def retention(ctx: dict[str, Any]) -> None:
    log.info("retention sweep done", **await ctx["sweep"]())


async def audit_retention(ctx: dict[str, Any]) -> None:
    log.info("audit purge done", purged=await ctx["purge_audit"]())


async def webhook_retention(ctx: dict[str, Any]) -> None:
    log.info("webhook deliveries purged", purged=await ctx["purge_deliveries"]())


async def usage_metering(ctx: dict[str, Any]) -> None:
    if count := await ctx["fold_usage"]():
        log.info("usage folded", tallies=count)


class PatientWorker(Worker):
    """arq's worker, except that a Redis outage does not end it, and that it wakes when work
    arrives.

    arq lets the first Redis error of its poll loop end the worker: `tenantry dev` would serve on
    with no worker, `tenantry worker` would exit. This one logs the outage once, keeps polling
    and picks up jobs again when Redis answers; running tasks keep their state in PostgreSQL.

    arq polls the queue every ``poll_delay`` (0.5 s), so a job waits up to that long, and a
    worker whose slots were full waits for its next poll to start more. This one polls at once
    when a job is announced on the queue's wake channel (``ArqJobQueue`` publishes there after
    each enqueue), when a slot frees up after a poll that left jobs behind, and when a poll read
    as many ids as it may; otherwise every ``poll_delay`` as before, which also finds whatever
    a lost announcement was about: the queue stays the truth, the wake-up is only a hint.
    """

    redis_down = False

    def __init__(self, *args: Any, wake_channel: str, dispatch: Dispatcher, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wake_channel = wake_channel
        self.dispatch = dispatch
        # arq's loop sleeps poll_delay after each poll; here the wait is this class's own.
        self.poll_wait, self.poll_delay_s = self.poll_delay_s, 0
        self.woken = asyncio.Event()
        # A poll left jobs for later: wake at the next free slot, or poll again at once.
        self.full = False
        self.read_all = False
        self.listening: asyncio.Task[None] | None = None

    async def main(self) -> None:
        try:
            await super().main()
        finally:
            if self.listening is not None:
                self.listening.cancel()

    async def _poll_iteration(self) -> None:
        if self.listening is None:  # arq's pool exists from here on
            self.listening = asyncio.create_task(self._listen())
        self.full = self.job_counter >= self.max_jobs
        self.read_all = False
        try:
            # Tenants' backlogged tasks into the queue, as far as its window has room.
            await self.dispatch(self.pool)
            await super()._poll_iteration()
        except RedisError as error:
            if not self.redis_down:
                log.error("redis unavailable; the worker waits for it", error=type(error).__name__)
            self.redis_down = True
        else:
            if self.redis_down:
                log.info("redis is back; the worker takes jobs again")
                self.redis_down = False
        if not self.read_all:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_wait):
                    await self.woken.wait()
        self.woken.clear()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        self.read_all = len(job_ids) >= self.queue_read_limit and not self.redis_down
        # A job stays in the queue while it runs: arq would check each running one in Redis,
        # a few round trips apiece at every poll. Those running here are known; those running
        # elsewhere are asked for in one round trip. arq's own check still decides.
        running_here = {job_id for job_id, task in self.tasks.items() if not task.done()}
        waiting = [job_id for job_id in job_ids if job_id.decode() not in running_here]
        if waiting:
            taken = await self.pool.mget([in_progress_key_prefix + j.decode() for j in waiting])
            waiting = [job_id for job_id, key in zip(waiting, taken, strict=True) if key is None]
        await super().start_jobs(waiting)
        if self.job_counter >= self.max_jobs:
            self.full = True

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        if self.full:
            self.full = False
            self.woken.set()

    async def _listen(self) -> None:
        """Wake the poll loop at each announcement, subscribed again after an outage."""
        while True:
            try:
                async with self.pool.pubsub() as pubsub:
                    await pubsub.subscribe(self.wake_channel)
                    # The first message confirms the subscription: what was announced
                    # before it is polled for then.
                    async for _ in pubsub.listen():
                        self.woken.set()
            except (RedisError, OSError):
                await asyncio.sleep(self.poll_wait)


def build_worker(
    *,
    redis_url: str,
    queue_name: str,
    run: RunTask,
    reconcile_pending: Reconcile,
    reap_stranded: Reconcile,
    sweep_files: Callable[[], Awaitable[dict[str, int]]],
    purge_audit: Reconcile,
    erase: Callable[[UUID], Awaitable[Any]],
    resume_erased: Callable[[], Awaitable[Sequence[Any]]],
    fold_usage: Reconcile,
    webhooks: WebhookLoop,
    purge_deliveries: Reconcile,
    concurrency: int,
    timeout: timedelta,
    max_attempts: int,
    dispatch_window: int,
    running_limit: int | None,
    handle_signals: bool,
    completion_wait: timedelta = timedelta(0),
) -> Worker:
    gauges = WorkerGauges(
        queue_name=queue_name, limit=concurrency, running=lambda: _running(worker)
    )
    worker = PatientWorker(
        wake_channel=wake_channel(queue_name),
        dispatch=Dispatcher(queue_name, window=dispatch_window, running_limit=running_limit),
        functions=[run_task, erase_tenant],
        cron_jobs=[
            cron(reconcile, second={0, 30}, run_at_startup=True, unique=True),
            cron(reap, second={15, 45}, unique=True),
            # Daily: purge files deleted past their grace period, and orphan objects.
            cron(retention, hour={3}, minute={17}, second={0}, unique=True),
            # Daily: purge audit events older than their retention.
            cron(audit_retention, hour={3}, minute={47}, second={0}, unique=True),
            # Erasures no worker is on (it died, or the enqueue was lost) go back to the queue.
            cron(resume_erasures, second={5}, unique=True),
            # Usage counted by every process, from Redis into the usage days.
            cron(usage_metering, second={20, 50}, unique=True),
            # Daily: finished webhook deliveries past their retention.
            cron(webhook_retention, hour={4}, minute={7}, second={0}, unique=True),
        ],
        redis_settings=RedisSettings.from_dsn(redis_url),
        queue_name=queue_name,
        max_jobs=concurrency,
        job_timeout=timeout,
        # Our attempts are counted on the row; arq's own cap only stops a runaway loop.
        max_tries=max_attempts + 1,
        # No result keys: a finished job's id must not block a later re-enqueue.
        keep_result=0,
        handle_signals=handle_signals,
        # On SIGINT/SIGTERM: take no new jobs, let running ones finish for this long.
        job_completion_wait=int(completion_wait.total_seconds()),
        ctx={
            "run": run,
            "reconcile": reconcile_pending,
            "reap": reap_stranded,
            "sweep": sweep_files,
            "purge_audit": purge_audit,
            "erase": erase,
            "resume_erasures": resume_erased,
            "fold_usage": fold_usage,
            "purge_deliveries": purge_deliveries,
        },
        health_check_interval=60,
        on_startup=_both(gauges.start, webhooks.start),
        on_shutdown=_both(webhooks.stop, gauges.stop),
    )
    return worker


def _both(
    first: Callable[[dict[str, Any]], Awaitable[None]],
    second: Callable[[dict[str, Any]], Awaitable[None]],
) -> Callable[[dict[str, Any]], Awaitable[None]]:
    async def run(ctx: dict[str, Any]) -> None:
        await first(ctx)
        await second(ctx)

    return run


def _running(worker: Worker) -> int:
    # arq's own count of the jobs a worker runs (its health-check line's j_ongoing).
    return sum(not task.done() for task in worker.tasks.values())

"""arq on Redis as the job queue: transport only, the tasks table is the truth."""

from __future__ import annotations

import structlog
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from redis.exceptions import RedisError

from tenantry.domain.tasks import Task

RUN_TASK = "run_task"
log = structlog.stdlib.get_logger("tenantry.jobs")


class ArqJobQueue:
    def __init__(self, redis_url: str, *, queue_name: str) -> None:
        self.redis_settings = RedisSettings.from_dsn(redis_url)
        self.queue_name = queue_name
        self.pool: ArqRedis | None = None

    async def start(self) -> None:
        self.pool = await create_pool(self.redis_settings, default_queue_name=self.queue_name)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()

    async def enqueue(self, task: Task, *, request_id: str | None) -> None:
        assert self.pool is not None, "ArqJobQueue.start() was not awaited"
        try:
            # The job id is the task id: enqueueing a task twice queues it once.
            await self.pool.enqueue_job(
                RUN_TASK,
                str(task.tenant_id),
                str(task.id),
                request_id,
                None if task.created_by is None else str(task.created_by),
                _job_id=str(task.id),
            )
        except (RedisError, OSError) as error:
            log.warning(
                "task not enqueued; the reconciler will",
                task_id=str(task.id),
                error=type(error).__name__,
            )

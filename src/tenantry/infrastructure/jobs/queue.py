"""arq on Redis as the job queue: transport only, the tasks table is the truth."""

from __future__ import annotations

import contextlib

import structlog
from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from tenantry.domain.tasks import Task

RUN_TASK = "run_task"
log = structlog.stdlib.get_logger("tenantry.jobs")


def wake_channel(queue_name: str) -> str:
    """The Redis channel that tells a queue's workers a job arrived (see PatientWorker)."""
    return f"{queue_name}:wake"


class ArqJobQueue:
    """Connects lazily, with timeouts: an unreachable Redis delays no start-up and hangs no
    request; a lost enqueue is the reconciler's to repair."""

    def __init__(self, redis_url: str, *, queue_name: str, timeout: float) -> None:
        self.queue_name = queue_name
        self.wake_channel = wake_channel(queue_name)
        self.pool = ConnectionPool.from_url(
            redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self.redis = ArqRedis(self.pool, default_queue_name=queue_name)

    async def close(self) -> None:
        await self.redis.aclose()
        await self.pool.aclose()

    async def enqueue(self, task: Task, *, request_id: str | None) -> None:
        try:
            # The job id is the task id: enqueueing a task twice queues it once.
            await self.redis.enqueue_job(
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
            return
        # Idle workers poll at once rather than at their next poll; a lost wake-up costs only
        # that wait.
        with contextlib.suppress(RedisError, OSError):
            await self.redis.publish(self.wake_channel, b"")

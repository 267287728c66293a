"""arq on Redis as the job queue: transport only, the tasks table is the truth."""

from __future__ import annotations

from uuid import UUID

import structlog
from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from tenantry.domain.tasks import Task

RUN_TASK = "run_task"
ERASE_TENANT = "erase_tenant"
log = structlog.stdlib.get_logger("tenantry.jobs")

# arq's enqueue_job in one round trip instead of three: the same checks (no job and no result
# kept under this id), the same writes (the job, its place in the queue), atomic in a script;
# then the wake-up of idle workers (see PatientWorker).
_ENQUEUE = """
if redis.call('exists', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('psetex', KEYS[1], ARGV[1], ARGV[2])
redis.call('zadd', KEYS[3], ARGV[3], ARGV[4])
redis.call('publish', KEYS[4], '')
return 1
"""


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
        self.enqueue_job = self.redis.register_script(_ENQUEUE)

    async def close(self) -> None:
        await self.redis.aclose()
        await self.pool.aclose()

    async def enqueue(self, task: Task, *, request_id: str | None) -> None:
        # The job id is the task id: enqueueing a task twice queues it once.
        job_id = str(task.id)
        created_by = None if task.created_by is None else str(task.created_by)
        try:
            await self.send(RUN_TASK, job_id, (str(task.tenant_id), job_id, request_id, created_by))
        except (RedisError, OSError) as error:
            log.warning(
                "task not enqueued; the reconciler will",
                task_id=job_id,
                error=type(error).__name__,
            )

    async def send(self, function: str, job_id: str, args: tuple[str | None, ...]) -> None:
        """Queue a call of the worker's ``function`` under ``job_id``, unless a job of that id
        is queued or running."""
        now = timestamp_ms()
        # As arq's enqueue_job writes it, so that arq's worker reads it as its own.
        job = serialize_job(function, args, {}, None, now)
        await self.enqueue_job(
            keys=[
                job_key_prefix + job_id,
                result_key_prefix + job_id,
                self.queue_name,
                self.wake_channel,
            ],
            args=[self.redis.expires_extra_ms, job, now, job_id],
        )


class ArqErasureQueue:
    """Erasure jobs on the tasks' queue. The job id names the erasure: it is queued once
    however often the sweep finds it quiet."""

    def __init__(self, queue: ArqJobQueue) -> None:
        self.queue = queue

    async def enqueue(self, erasure_id: UUID, *, request_id: str | None) -> None:
        try:
            await self.queue.send(
                ERASE_TENANT, f"erasure:{erasure_id}", (str(erasure_id), request_id)
            )
        except (RedisError, OSError) as error:
            log.warning(
                "erasure not enqueued; the erasure sweep will",
                erasure_id=str(erasure_id),
                error=type(error).__name__,
            )

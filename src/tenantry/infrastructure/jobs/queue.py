"""arq on Redis as the job queue: transport only, the tasks table is the truth."""

from __future__ import annotations

from uuid import UUID

import structlog
from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.asyncio import ConnectionPool, Redis
from redis.commands.core import AsyncScript
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

# Fair dispatch across tenants. A task's job is written as arq writes it, but its id goes to
# its tenant's backlog (a list) instead of the queue, and the tenant joins the ring of tenants
# with a backlog. Dispatching moves ids from the backlogs into the queue, one tenant after the
# other round the ring, while fewer than ``window`` jobs are due there (running ones included:
# arq keeps a job in the queue until it ends). So a tenant's thousand tasks wait in its own
# backlog, and another tenant's first task is at most ``window`` jobs and one round behind.
_DISPATCH = """
local queue, ring, active, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, window, prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local moved = 0
while redis.call('zcount', queue, '-inf', now) < window do
    local tenant = redis.call('lmove', ring, ring, 'LEFT', 'RIGHT')
    if not tenant then break end
    local backlog = prefix .. tenant
    local job_id = redis.call('lpop', backlog)
    if job_id then
        redis.call('zadd', queue, now, job_id)
        moved = moved + 1
    end
    if redis.call('llen', backlog) == 0 then
        redis.call('lrem', ring, -1, tenant)
        redis.call('srem', active, tenant)
    end
end
if moved > 0 then redis.call('publish', wake, '') end
return moved
"""
# The task's job into its tenant's backlog (KEYS[5..7]: job, result, backlog), then dispatch.
_ENQUEUE_FAIR = (
    """
if redis.call('exists', KEYS[5], KEYS[6]) > 0 then return -1 end
redis.call('psetex', KEYS[5], ARGV[4], ARGV[5])
redis.call('rpush', KEYS[7], ARGV[6])
if redis.call('sadd', KEYS[3], ARGV[7]) == 1 then redis.call('rpush', KEYS[2], ARGV[7]) end
"""
    + _DISPATCH
)


def wake_channel(queue_name: str) -> str:
    """The Redis channel that tells a queue's workers a job arrived (see PatientWorker)."""
    return f"{queue_name}:wake"


class FairKeys:
    """Where a queue's fair dispatch keeps its state, beside the arq queue of that name."""

    def __init__(self, queue_name: str) -> None:
        self.queue = queue_name
        self.ring = f"{queue_name}:fair:ring"
        self.active = f"{queue_name}:fair:active"
        self.backlog_prefix = f"{queue_name}:fair:backlog:"
        self.wake = wake_channel(queue_name)

    def dispatch_keys(self) -> list[str]:
        return [self.queue, self.ring, self.active, self.wake]


class Dispatcher:
    """Moves backlogged jobs into the queue while its due window has room: each worker calls
    it before every poll, so jobs move as slots free up (``PatientWorker``)."""

    def __init__(self, queue_name: str, *, window: int) -> None:
        self.keys = FairKeys(queue_name)
        self.window = window
        self.script: AsyncScript | None = None

    async def __call__(self, redis: Redis) -> int:
        # EVAL with the script's text: redis-py sends EVALSHA first and the text only once.
        if self.script is None:
            self.script = redis.register_script(_DISPATCH)
        moved = await self.script(
            keys=self.keys.dispatch_keys(),
            args=[timestamp_ms(), self.window, self.keys.backlog_prefix],
            client=redis,
        )
        return int(moved)


class ArqJobQueue:
    """Connects lazily, with timeouts: an unreachable Redis delays no start-up and hangs no
    request; a lost enqueue is the reconciler's to repair. Tasks go through their tenant's
    backlog and the fair dispatch; other jobs (erasures) straight to the queue."""

    def __init__(self, redis_url: str, *, queue_name: str, timeout: float, window: int) -> None:
        self.queue_name = queue_name
        self.wake_channel = wake_channel(queue_name)
        self.fair = FairKeys(queue_name)
        self.window = window
        self.pool = ConnectionPool.from_url(
            redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self.redis = ArqRedis(self.pool, default_queue_name=queue_name)
        self.enqueue_job = self.redis.register_script(_ENQUEUE)
        self.enqueue_task_job = self.redis.register_script(_ENQUEUE_FAIR)

    async def close(self) -> None:
        await self.redis.aclose()
        await self.pool.aclose()

    async def enqueue(self, task: Task, *, request_id: str | None) -> None:
        # The job id is the task id: enqueueing a task twice queues it once.
        job_id = str(task.id)
        tenant = str(task.tenant_id)
        created_by = None if task.created_by is None else str(task.created_by)
        now = timestamp_ms()
        job = serialize_job(RUN_TASK, (tenant, job_id, request_id, created_by), {}, None, now)
        try:
            await self.enqueue_task_job(
                keys=[
                    *self.fair.dispatch_keys(),
                    job_key_prefix + job_id,
                    result_key_prefix + job_id,
                    self.fair.backlog_prefix + tenant,
                ],
                args=[
                    now,
                    self.window,
                    self.fair.backlog_prefix,
                    self.redis.expires_extra_ms,
                    job,
                    job_id,
                    tenant,
                ],
            )
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

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
#
# A tenant with a running limit (its own in the ``limits`` hash, written at enqueue, else
# ``running``; 0 for none) is passed over while that many of its jobs are in the queue: the
# set of its dispatched ids, each dropped once the queue no longer holds it, counts them.
_DISPATCH = """
local queue, ring, active, wake, limits = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now, window, prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local running, held_prefix = tonumber(ARGV[4]), ARGV[5]
local moved, passed = 0, 0
while redis.call('zcount', queue, '-inf', now) < window do
    local tenants = redis.call('llen', ring)
    if tenants == 0 or passed >= tenants then break end
    local tenant = redis.call('lmove', ring, ring, 'LEFT', 'RIGHT')
    local limit = tonumber(redis.call('hget', limits, tenant)) or running
    local held = held_prefix .. tenant
    local in_queue = 0
    if limit > 0 then
        for _, job_id in ipairs(redis.call('smembers', held)) do
            if redis.call('zscore', queue, job_id) then
                in_queue = in_queue + 1
            else
                redis.call('srem', held, job_id)
            end
        end
    end
    if limit > 0 and in_queue >= limit then
        passed = passed + 1
    else
        passed = 0
        local backlog = prefix .. tenant
        local job_id = redis.call('lpop', backlog)
        if job_id then
            redis.call('zadd', queue, now, job_id)
            if limit > 0 then redis.call('sadd', held, job_id) end
            moved = moved + 1
        end
        if redis.call('llen', backlog) == 0 then
            redis.call('lrem', ring, -1, tenant)
            redis.call('srem', active, tenant)
        end
    end
end
if moved > 0 then redis.call('publish', wake, '') end
return moved
"""
# The task's job into its tenant's backlog (KEYS[6..8]: job, result, backlog; ARGV[6..10]:
# the job's lifetime and data, its id, the tenant, the tenant's running limit or ''), then
# dispatch.
_ENQUEUE_FAIR = (
    """
if redis.call('exists', KEYS[6], KEYS[7]) > 0 then return -1 end
redis.call('psetex', KEYS[6], ARGV[6], ARGV[7])
redis.call('rpush', KEYS[8], ARGV[8])
if redis.call('sadd', KEYS[3], ARGV[9]) == 1 then redis.call('rpush', KEYS[2], ARGV[9]) end
if ARGV[10] ~= '' then redis.call('hset', KEYS[5], ARGV[9], ARGV[10]) end
"""
    + _DISPATCH
)


def wake_channel(queue_name: str) -> str:
    """The Redis channel that tells a queue's workers a job arrived (see PatientWorker)."""
    return f"{queue_name}:wake"


class FairKeys:
    """Where a queue's fair dispatch keeps its state, beside the arq queue of that name."""

    def __init__(self, queue_name: str, *, running_limit: int | None) -> None:
        self.queue = queue_name
        self.ring = f"{queue_name}:fair:ring"
        self.active = f"{queue_name}:fair:active"
        self.limits = f"{queue_name}:fair:limits"
        self.backlog_prefix = f"{queue_name}:fair:backlog:"
        self.held_prefix = f"{queue_name}:fair:held:"
        self.wake = wake_channel(queue_name)
        self.running_limit = running_limit or 0

    def dispatch_keys(self) -> list[str]:
        return [self.queue, self.ring, self.active, self.wake, self.limits]

    def dispatch_args(self, now: int, window: int) -> list[str | int]:
        return [now, window, self.backlog_prefix, self.running_limit, self.held_prefix]


class Dispatcher:
    """Moves backlogged jobs into the queue while its due window has room: each worker calls
    it before every poll, so jobs move as slots free up (``PatientWorker``)."""

    def __init__(self, queue_name: str, *, window: int, running_limit: int | None) -> None:
        self.keys = FairKeys(queue_name, running_limit=running_limit)
        self.window = window
        self.script: AsyncScript | None = None

    async def __call__(self, redis: Redis) -> int:
        # Registered once; redis-py sends EVALSHA, and the text when the server lacks it.
        if self.script is None:
            self.script = redis.register_script(_DISPATCH)
        moved = await self.script(
            keys=self.keys.dispatch_keys(),
            args=self.keys.dispatch_args(timestamp_ms(), self.window),
            client=redis,
        )
        return int(moved)


class ArqJobQueue:
    """Connects lazily, with timeouts: an unreachable Redis delays no start-up and hangs no
    request; a lost enqueue is the reconciler's to repair. Tasks go through their tenant's
    backlog and the fair dispatch; other jobs (erasures) straight to the queue."""

    def __init__(
        self,
        redis_url: str,
        *,
        queue_name: str,
        timeout: float,
        window: int,
        running_limit: int | None = None,
    ) -> None:
        self.queue_name = queue_name
        self.wake_channel = wake_channel(queue_name)
        self.fair = FairKeys(queue_name, running_limit=running_limit)
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

    async def enqueue(
        self, task: Task, *, request_id: str | None, running_limit: int | None = None
    ) -> None:
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
                    *self.fair.dispatch_args(now, self.window),
                    self.redis.expires_extra_ms,
                    job,
                    job_id,
                    tenant,
                    # '' keeps the limit the tenant has (0: none).
                    "" if running_limit is None else running_limit,
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

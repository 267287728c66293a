"""The bare baseline of bench/tasks.py: an arq worker with one no-op job function, no product code.

Each job appends "<enqueued ms> <done ms>" to a Redis list, so the benchmark counts completions
and per-job latency from it as it does from the product's task rows. The worker runs as the
`arq` command does (``Worker.run()``, arq's default INFO logging: two lines per job), with the
product's settings where they change the work per job (see build_worker in
tenantry.infrastructure.jobs.worker). bench/tasks.py starts it with

    python bench/baseline_arq.py --redis-url URL --queue NAME --done-key KEY --max-jobs N
"""

from __future__ import annotations

import argparse
import logging.config
from typing import Any

from arq.connections import RedisSettings
from arq.logs import default_log_config
from arq.utils import timestamp_ms
from arq.worker import Worker

# The product's defaults: TENANTRY_TASK_TIMEOUT_SECONDS, and TENANTRY_TASK_MAX_ATTEMPTS + 1.
JOB_TIMEOUT_S = 600
MAX_TRIES = 4


async def noop(ctx: dict[str, Any]) -> None:
    enqueued_ms = int(ctx["enqueue_time"].timestamp() * 1000)
    await ctx["redis"].rpush(ctx["done_key"], f"{enqueued_ms} {timestamp_ms()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--done-key", required=True)
    parser.add_argument("--max-jobs", type=int, required=True)
    args = parser.parse_args()
    logging.config.dictConfig(default_log_config(verbose=False))
    Worker(
        functions=[noop],
        redis_settings=RedisSettings.from_dsn(args.redis_url),
        queue_name=args.queue,
        max_jobs=args.max_jobs,
        job_timeout=JOB_TIMEOUT_S,
        max_tries=MAX_TRIES,
        # As the product: no result keys, and a health-check key written once a minute.
        keep_result=0,
        health_check_interval=60,
        ctx={"done_key": args.done_key},
    ).run()


if __name__ == "__main__":
    main()

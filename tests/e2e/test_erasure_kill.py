"""An erasure whose process is killed (SIGKILL) half way: the log says how far it got, and
`tenantry tenants erase --resume` in a new process finishes it, every row of the tenant gone
and the other tenant's kept."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from tenantry.config import Settings

from ..integration.test_erasure import row_counts, slug_of
from .test_worker_kill import worker_env

pytestmark = pytest.mark.timeout(180)
EVENTS = 40_000


async def seed(database_owner: asyncpg.Connection, tenant: uuid.UUID, slug: str) -> None:
    """A tenant with enough audit events that its erasure takes many batches."""
    await database_owner.execute(
        "insert into tenants (id, name, slug, created_at, updated_at) "
        "values ($1, $2, $2, now(), now())",
        tenant,
        slug,
    )
    await database_owner.execute(
        "insert into audit_events (tenant_id, id, actor_type, action, target_type, created_at,"
        " updated_at) select $1, gen_random_uuid(), 'system', 'project.created', 'project',"
        " now(), now() from generate_series(1, $2)",
        tenant,
        EVENTS,
    )


async def tenantry(
    settings: Settings, project_root: Path, *args: str
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tenantry", *args,
        cwd=project_root,
        env=worker_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_an_erasure_killed_half_way_is_finished_by_a_new_process(
    settings: Settings, database_owner: asyncpg.Connection, project_root: Path
) -> None:
    erased, kept = uuid.uuid4(), uuid.uuid4()
    await seed(database_owner, erased, "acme")
    await seed(database_owner, kept, "globex")
    slug = await slug_of(database_owner, erased)
    first = await tenantry(settings, project_root, "tenants", "erase", slug, "--confirm", slug)
    deadline = time.monotonic() + 60
    removed = 0
    while removed == 0:
        assert time.monotonic() < deadline, "the erasure never began removing rows"
        assert first.returncode is None, await first.communicate()
        removed = await database_owner.fetchval(
            "select coalesce(max(rows_removed), 0) from tenant_erasures where erased_tenant_id = $1",
            erased,
        )
        await asyncio.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    await first.wait()
    interrupted = await database_owner.fetchrow(
        "select state, rows_removed from tenant_erasures where erased_tenant_id = $1", erased
    )
    assert interrupted["state"] == "running"
    assert 0 < interrupted["rows_removed"] < EVENTS

    second = await tenantry(settings, project_root, "tenants", "erase", "--resume")
    out, err = await second.communicate()
    assert second.returncode == 0, err.decode()
    assert f"Erased tenant acme ({erased}): finished, {EVENTS} rows" in out.decode()
    counts = await row_counts(database_owner)
    assert all(erased not in by_tenant for by_tenant in counts.values())
    assert counts["audit_events"][kept] == EVENTS
    assert await database_owner.fetchval("select count(*) from tenants where id = $1", erased) == 0

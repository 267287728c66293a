"""The integration tests that matter most on a cluster, run again on a real Citus cluster: a
coordinator and two workers on 127.0.0.1 (tests/citus.py), the schema migrated on the
coordinator and distributed by ``tenantry db distribute``'s code.

Skipped, with the reason, where Citus is not installed for the server's PostgreSQL
(deploy/citus/build.sh installs it). The cluster starts once, in the one pytest worker that
runs these tests (they share an xdist group).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tenantry.infrastructure.db import citus, migrations
from tests.citus import CitusCluster, missing
from tests.conftest import as_app_role
from tests.e2e.conftest import workers  # noqa: F401 - processes a test starts, killed at its end

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def citus_cluster() -> Iterator[CitusCluster]:
    if reason := missing():
        pytest.skip(f"no Citus cluster: {reason}")
    # Under /tmp, not pytest's temporary root: as root, the nodes run as the postgres user,
    # who must reach their directories.
    root = Path(tempfile.mkdtemp(prefix="tenantry-citus-"))
    cluster = CitusCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def admin_database_url(citus_cluster: CitusCluster) -> str:
    return citus_cluster.coordinator.url()


@pytest.fixture(scope="session")
async def database_url(citus_cluster: CitusCluster) -> str:
    url = await citus_cluster.create_database(f"tenantry_test_{uuid.uuid4().hex[:12]}")
    await asyncio.to_thread(migrations.upgrade, url)
    await citus.distribute_database(url)
    # Gone with the cluster at the session's end.
    return url


# Overridden with database_url: a session fixture of the root conftest made from it would keep
# whichever database the pytest worker asked for first, the embedded one or the cluster's.
@pytest.fixture(scope="session")
def app_database_url(database_url: str) -> str:
    return as_app_role(database_url)


# Before the hook that names each item by its group (tests/conftest.py): then the scheduler
# sends every cluster test to one worker, and one cluster starts.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, dropped = [], []
    for item in items:
        if HERE in Path(item.path).parents:
            # The storage backend is not the cluster's question: files run on the local one
            # here, on both in tests/integration.
            if "[s3]" in item.name:
                dropped.append(item)
                continue
            item.add_marker(pytest.mark.xdist_group("citus"))
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept

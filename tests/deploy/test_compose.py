"""docker-compose.yml: valid Compose, and wired the way the stack needs to come up healthy."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest

from tenantry.config import load_settings

from .stack import (
    COMPOSE_ENV_EXAMPLE,
    COMPOSE_FILE,
    ROOT,
    compose,
    env_file,
    environment,
    interpolate,
    is_one_shot,
    services,
    tool,
    variables,
)

SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"
APP_SERVICES = {"api", "worker", "migrate", "vault-bootstrap"}
SECRET_KEY = re.compile(r"PASSWORD|PASS$|SECRET|TOKEN")
URL = re.compile(r"^[a-z]+://")


def marked(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment with every variable replaced by a marker naming it, so what
    comes from .env and what is written in the file can be told apart."""
    names = {name for name, _ in variables(COMPOSE_FILE.read_text())}
    return environment(service, {name: f"VAR{name}VAR" for name in names})


def from_variable(value: str | None) -> bool:
    return value is not None and re.fullmatch(r"VAR\w+VAR", value) is not None


def url_password(value: str) -> str | None:
    return urlsplit(value).password if URL.match(value) else None


def long_running() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services().items() if not is_one_shot(s)}


def one_shots() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services().items() if is_one_shot(s)}


def test_compose_file_matches_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator(schema).validate(compose())


def test_the_specification_schema_rejects_what_compose_rejects() -> None:
    broken = compose()
    broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_finished"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(broken)


def test_the_stack_has_every_service_it_promises() -> None:
    expected = {
        "postgres", "postgres-init", "redis", "minio", "minio-init", "vault", "vault-bootstrap",
        "migrate", "api", "worker", "prometheus", "grafana", "postgres-exporter",
        "redis-exporter", "cadvisor",
    }  # fmt: skip
    assert set(services()) == expected


def test_every_service_says_whether_it_runs_once_or_for_good() -> None:
    for name, service in services().items():
        assert service.get("restart") in {"no", "unless-stopped"}, name
    assert set(one_shots()) == {"postgres-init", "minio-init", "vault-bootstrap", "migrate"}


def test_every_long_running_service_has_a_health_check() -> None:
    for name, service in long_running().items():
        check = service.get("healthcheck")
        assert check, f"{name} has no health check"
        assert check.get("test"), name
        assert not check.get("disable"), name
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name


def test_depends_on_always_waits_for_a_condition() -> None:
    every = services()
    for name, service in every.items():
        for target, dependency in (service.get("depends_on") or {}).items():
            assert isinstance(dependency, dict), f"{name} -> {target}: no condition"
            condition = dependency.get("condition")
            if condition == "service_healthy":
                assert "healthcheck" in every[target], f"{name} waits on {target}'s health"
            else:
                assert condition == "service_completed_successfully", f"{name} -> {target}"
                assert is_one_shot(every[target]), f"{name} waits for {target} to exit"


def test_every_one_shot_is_awaited_by_a_long_running_service() -> None:
    """`docker compose up --wait` reports a one-shot's exit as a failure unless a running
    service depends on it with service_completed_successfully."""
    awaited = {
        target
        for service in long_running().values()
        for target, dependency in (service.get("depends_on") or {}).items()
        if dependency["condition"] == "service_completed_successfully"
    }
    assert awaited == set(one_shots())


def test_the_app_starts_after_its_migrations_and_secrets() -> None:
    every = services()
    for name in ("api", "worker"):
        needs = every[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully"
        assert needs["vault-bootstrap"]["condition"] == "service_completed_successfully"
    migrate = every["migrate"]["depends_on"]
    assert migrate["postgres-init"]["condition"] == "service_completed_successfully"
    assert migrate["vault-bootstrap"]["condition"] == "service_completed_successfully"


def test_named_volumes_are_declared_and_used() -> None:
    declared = set(compose()["volumes"])
    used = set()
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith(("./", "/")):
                continue
            assert source in declared, f"{name} mounts undeclared volume {source}"
            used.add(source)
    assert used == declared


def test_bind_mounted_project_files_exist() -> None:
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_one_named_network_joins_every_service() -> None:
    networks = compose()["networks"]
    assert list(networks) == ["tenantry"]
    assert networks["tenantry"]["name"] == "tenantry"
    for name, service in services().items():
        assert service.get("networks") == ["tenantry"], name
        assert "network_mode" not in service, name


def test_every_service_has_cpu_and_memory_limits() -> None:
    for name, service in services().items():
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        assert float(limits.get("cpus", 0)) > 0, name
        assert re.fullmatch(r"\d+[MG]", str(limits.get("memory", ""))), name


def test_no_credential_is_written_in_the_file() -> None:
    checked = 0
    for name, service in services().items():
        for key, value in marked(service).items():
            if SECRET_KEY.search(key):
                assert from_variable(value), f"{name}: {key} is not from the environment"
                checked += 1
            password = url_password(value)
            if password is not None:
                assert from_variable(password), f"{name}: {key} has a literal password"
                checked += 1
    assert checked >= 15


def test_app_services_hold_no_database_or_s3_secret_but_vault_bootstrap() -> None:
    """The app reads them from Vault; only vault-bootstrap copies them there."""
    every = services()
    for name in APP_SERVICES - {"vault-bootstrap"}:
        env = marked(every[name])
        assert "TENANTRY_VAULT_ADDR" in env, name
        for key in ("TENANTRY_DATABASE_URL", "TENANTRY_MIGRATION_DATABASE_URL"):
            assert url_password(env[key]) is None, f"{name}: {key} carries a password"
        assert not {"TENANTRY_S3_ACCESS_KEY_ID", "TENANTRY_S3_SECRET_ACCESS_KEY"} & set(env)
    bootstrap = marked(every["vault-bootstrap"])
    assert url_password(bootstrap["TENANTRY_DATABASE_URL"]) == "VARAPP_DB_PASSWORDVAR"
    assert url_password(bootstrap["TENANTRY_MIGRATION_DATABASE_URL"]) == "VARPOSTGRES_PASSWORDVAR"
    assert bootstrap["TENANTRY_S3_SECRET_ACCESS_KEY"] == "VARS3_SECRET_ACCESS_KEYVAR"


def test_prometheus_keeps_thirty_days() -> None:
    command = services()["prometheus"]["command"]
    assert "--storage.tsdb.retention.time=30d" in command
    assert "--config.file=/etc/prometheus/prometheus.yml" in command


def test_every_variable_is_documented_with_its_default() -> None:
    text = COMPOSE_FILE.read_text()
    defaults: dict[str, set[str | None]] = {}
    for name, default in variables(text):
        defaults.setdefault(name, set()).add(default)
    documented = env_file(COMPOSE_ENV_EXAMPLE)
    assert set(defaults) == set(documented)
    for name, seen in defaults.items():
        assert seen == {documented[name]}, f"${{{name}}}: defaults {seen} vs the example"


def test_no_variable_is_a_tenantry_setting() -> None:
    """The app reads the root .env too, and stops at a TENANTRY_* name it does not know."""
    assert not [
        name for name, _ in variables(COMPOSE_FILE.read_text()) if name.startswith("TENANTRY_")
    ]
    assert not [name for name in env_file(COMPOSE_ENV_EXAMPLE) if name.startswith("TENANTRY_")]


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_services_get_settings_the_app_accepts(name: str) -> None:
    service = services()[name]
    assert service["image"] == "${APP_IMAGE:-tenantry:local}"
    assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    settings = load_settings(environ=environment(service, {}), env_file=None)
    assert settings.is_production
    assert settings.host == "0.0.0.0"
    assert settings.storage_backend == "s3"
    assert settings.vault_addr == "http://vault:8200"
    assert settings.database_url is not None
    assert settings.database_url.startswith("postgresql://tenantry_app")
    assert settings.worker_metrics_port == 9100


def test_the_app_role_password_reaches_postgres_and_vault_alike() -> None:
    every = services()
    example = env_file(COMPOSE_ENV_EXAMPLE)
    role_password = environment(every["postgres-init"], example)["APP_DB_PASSWORD"]
    bootstrap = load_settings(environ=environment(every["vault-bootstrap"], example), env_file=None)
    assert bootstrap.database_url == (
        f"postgresql://tenantry_app:{role_password}@postgres:5432/{example['POSTGRES_DB']}"
    )
    owner = environment(every["postgres"], example)
    assert bootstrap.migration_database_url == (
        f"postgresql://{owner['POSTGRES_USER']}:{owner['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{owner['POSTGRES_DB']}"
    )


def test_the_s3_key_minio_init_creates_is_the_one_vault_receives() -> None:
    every = services()
    example = env_file(COMPOSE_ENV_EXAMPLE)
    made = environment(every["minio-init"], example)
    given = environment(every["vault-bootstrap"], example)
    assert given["TENANTRY_S3_ACCESS_KEY_ID"] == made["S3_ACCESS_KEY_ID"]
    assert given["TENANTRY_S3_SECRET_ACCESS_KEY"] == made["S3_SECRET_ACCESS_KEY"]
    assert given["TENANTRY_S3_BUCKET"] == made["S3_BUCKET"]


def test_redis_password_is_the_one_the_app_and_exporter_use() -> None:
    every = services()
    example = {"REDIS_PASSWORD": "from-dot-env"}
    assert environment(every["redis"], example)["REDIS_PASSWORD"] == "from-dot-env"
    assert environment(every["redis-exporter"], example)["REDIS_PASSWORD"] == "from-dot-env"
    url = environment(every["api"], example)["TENANTRY_REDIS_URL"]
    assert url == "redis://:from-dot-env@redis:6379/0"


def test_published_ports_listen_on_the_configured_address_only() -> None:
    for name, service in services().items():
        for port in service.get("ports", []):
            assert port.startswith("${BIND_ADDRESS:-127.0.0.1}:"), name
            assert interpolate(port, {}).startswith("127.0.0.1:"), name


def test_docker_compose_accepts_the_file() -> None:
    """Compose's own loader (interpolation, merge keys, the schema): no Docker engine needed."""
    docker = tool("docker")
    standalone = tool("docker-compose")
    commands = []
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        commands.append([docker, "compose"])
    if standalone:
        commands.append([standalone])
    if not commands:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    for command in commands:
        result = subprocess.run(
            [
                *command,
                "--project-directory",
                str(ROOT),
                "-f",
                str(COMPOSE_FILE),
                "config",
                "--quiet",
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr

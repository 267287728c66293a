from __future__ import annotations

from pathlib import Path

import pytest

from tenantry.config import Settings, SettingsError, load_settings, read_env_file


def load(**environ: str) -> Settings:
    return load_settings(environ=environ, env_file=None)


def test_defaults_need_no_environment() -> None:
    settings = load()
    assert settings.env == "development"
    assert settings.port == 8000
    assert settings.database_url is None
    assert not settings.json_logs


def test_values_are_converted_from_strings() -> None:
    settings = load(
        TENANTRY_PORT="9000",
        TENANTRY_ENV="production",
        TENANTRY_LOG_SQL="true",
        TENANTRY_CORS_ORIGINS="https://a.example, https://b.example",
        TENANTRY_DATABASE_URL="postgres://u:p@db/app",
    )
    assert settings.port == 9000
    assert settings.is_production
    assert settings.json_logs
    assert settings.log_sql is True
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.async_database_url == "postgresql+asyncpg://u:p@db/app"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("TENANTRY_PORT", "eighty", "TENANTRY_PORT: Expected `int`"),
        ("TENANTRY_PORT", "70000", "TENANTRY_PORT: Expected `int` <= 65535"),
        ("TENANTRY_ENV", "staging", "TENANTRY_ENV: Expected one of development, production, test"),
        ("TENANTRY_LOG_JSON", "maybe", "TENANTRY_LOG_JSON: Expected `bool | null`"),
        ("TENANTRY_DB_POOL_SIZE", "0", "TENANTRY_DB_POOL_SIZE: Expected `int` >= 1"),
        (
            "TENANTRY_AUDIT_RETENTION_DAYS",
            "0",
            "TENANTRY_AUDIT_RETENTION_DAYS: Expected `int` >= 1",
        ),
        (
            "TENANTRY_DATABASE_URL",
            "mysql://x",
            "TENANTRY_DATABASE_URL: expected a postgresql:// URL",
        ),
        ("TENANTRY_REDIS_URL", "http://x", "TENANTRY_REDIS_URL: expected a redis:// URL"),
        ("TENANTRY_DATABSE_URL", "postgres://x", "TENANTRY_DATABSE_URL: unknown setting"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as error:
        load(**{variable: value})
    message = str(error.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_test_harness_variables_are_not_settings() -> None:
    assert load(TENANTRY_TEST_DATABASE_URL="postgresql://x").database_url is None


def test_required_setting_names_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"^TENANTRY_REDIS_URL: required"):
        load().required("redis_url")


def test_passwords_never_reach_the_repr() -> None:
    settings = load(
        TENANTRY_DATABASE_URL="postgresql://app:hunter2-secret@db/app",
        TENANTRY_REDIS_URL="redis://:redis-secret@cache:6379/0",
    )
    shown = repr(settings) + str(settings)
    assert "hunter2-secret" not in shown
    assert "redis-secret" not in shown
    assert "postgresql://app:***@db/app" in shown


def test_bad_url_message_hides_the_password() -> None:
    with pytest.raises(SettingsError) as error:
        load(TENANTRY_DATABASE_URL="mysql://root:topsecret@db/app")
    assert "topsecret" not in str(error.value)


def test_env_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\n\nTENANTRY_PORT=8100\nexport TENANTRY_HOST='0.0.0.0'\n"
        'TENANTRY_LOG_LEVEL="DEBUG"\nUNRELATED=1\n'
    )
    settings = load_settings(environ={"TENANTRY_PORT": "8200"}, env_file=env_file)
    assert settings.port == 8200
    assert settings.host == "0.0.0.0"
    assert settings.log_level == "DEBUG"


def test_env_file_line_without_equals_is_reported(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("TENANTRY_PORT\n")
    with pytest.raises(SettingsError, match=r"\.env:1: expected KEY=VALUE"):
        read_env_file(env_file)


def test_env_example_documents_every_setting(project_root: Path) -> None:
    documented = read_env_file(project_root / ".env.example").keys() | {
        line.lstrip("# ").split("=")[0]
        for line in (project_root / ".env.example").read_text().splitlines()
        if line.startswith("# TENANTRY_")
    }
    expected = {f"TENANTRY_{name.upper()}" for name in Settings.__struct_fields__}
    assert expected <= documented


def test_defaults_yield_to_the_environment() -> None:
    production = {"env": "production"}
    assert load_settings(environ={}, env_file=None, defaults=production).env == "production"
    chosen = load_settings(environ={"TENANTRY_ENV": "test"}, env_file=None, defaults=production)
    assert chosen.env == "test"

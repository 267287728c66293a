"""Typed settings read from ``TENANTRY_*`` environment variables and ``.env``.

One settings object serves the API, the workers and the CLI. A bad or missing value stops
start-up with a single line naming the variable and what it expected.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import msgspec

PREFIX = "TENANTRY_"
# Variables read by the test harness and tooling, not by the application.
_FOREIGN_PREFIXES = ("TENANTRY_TEST_", "TENANTRY_BENCH_")

Environment = Literal["development", "production", "test"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=300)]


SECRET_FIELDS = ("s3_secret_access_key", "vault_token", "vault_secret_id")


class SettingsError(Exception):
    """A setting is missing or malformed; the message names the variable."""


class SecretsError(RuntimeError):
    """Start-up cannot read a secret it needs; the message says where and what to do."""


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    """Every knob of Tenantry. Field ``foo`` is read from ``TENANTRY_FOO``."""

    env: Environment = "development"
    host: str = "127.0.0.1"
    port: Port = 8000
    # Peers (addresses or CIDR networks) whose X-Forwarded-For and X-Forwarded-Proto are
    # believed: the load balancers in front of the API. Empty trusts no forwarded header, so
    # the per-address sign-in limits key on the connecting peer and a client cannot choose it.
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    # Unset in development means "start the embedded engine"; `tenantry serve` requires them.
    # The API and workers connect as the app role (no superuser, no BYPASSRLS, owns nothing);
    # migrations run as the owner, through migration_database_url when it differs.
    database_url: str | None = None
    migration_database_url: str | None = None
    redis_url: str | None = None
    data_dir: str = ".tenantry"
    log_level: LogLevel = "INFO"
    # JSON lines in production, a readable console otherwise, unless set explicitly.
    log_json: bool | None = None
    log_sql: bool = False
    cors_origins: list[str] = msgspec.field(default_factory=list)
    # Connections kept open, and extra ones opened under load and closed on return. The same
    # cap of 20 as 10 + 10, but kept: with overflow, a steady 16 concurrent requests closed
    # and reopened connections all the time (connect, dialect set-up, cold statement cache).
    db_pool_size: PositiveInt = 20
    db_max_overflow: NonNegativeInt = 0
    db_pool_timeout: PositiveInt = 5
    db_connect_timeout: Seconds = 5.0
    # PostgreSQL cancels a statement running longer than this (its statement_timeout), and the
    # driver gives up on an answer a little later still (a server that hangs cannot cancel):
    # either way the request gets a 503 and its connection is not held forever.
    db_statement_timeout: Seconds = 30.0
    # Each readiness check gets this long; /ready answers well within 2 s even on a hang.
    ready_check_timeout: Seconds = 1.5
    max_request_body_bytes: PositiveInt = 1_048_576
    # `tenantry serve` pins each API process to one CPU (claimed through files under
    # <data_dir>/cpus: N processes on N CPUs get one each), the password hashes excepted. For
    # hosts, or containers with CPUs of their own, whose CPUs the API processes own: never for
    # replicas sharing a machine's CPUs, which would all take its first (docs/scaling.md).
    cpu_pinning: bool = False

    # Identity. Access tokens are short-lived JWTs; refresh tokens rotate on every use.
    access_token_ttl_seconds: Annotated[int, msgspec.Meta(ge=60, le=86_400)] = 900
    refresh_token_ttl_days: Annotated[int, msgspec.Meta(ge=1, le=365)] = 30
    # The signing keyring; unset means <data_dir>/keyring.json, created on first use outside
    # production. Production requires an existing keyring (`tenantry keys rotate` makes one).
    keyring_path: str | None = None
    # Secrets (the keyring, the database password, S3 keys) are read through a cache: a value
    # older than this is refreshed in the background while the old one keeps serving.
    secrets_cache_seconds: Annotated[int, msgspec.Meta(ge=1, le=86_400)] = 60
    # A token signed with a key this process does not know forces a re-read of the keyring at
    # most this often, so forged kids cannot hammer the secret store.
    keyring_refresh_seconds: Seconds = 1.0
    # Vault or OpenBao (KV v2). Set vault_addr to read secrets from there instead of the
    # environment; authenticate with vault_token or with AppRole (vault_role_id+vault_secret_id).
    vault_addr: str | None = None
    vault_token: str | None = None
    vault_role_id: str | None = None
    vault_secret_id: str | None = None
    vault_mount: str = "secret"
    # Paths under the mount. database: {password, migration_password}; s3: {access_key_id,
    # secret_access_key}; keyring: the JWT signing keyring, written by `tenantry keys rotate`.
    vault_database_path: str = "tenantry/database"
    vault_s3_path: str = "tenantry/s3"
    vault_keyring_path: str = "tenantry/keyring"
    vault_timeout_seconds: Annotated[int, msgspec.Meta(ge=1, le=60)] = 5
    # Retries, with exponential backoff, of refused connections and a sealed server (503).
    vault_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 3
    # argon2id, OWASP's recommendation (19 MiB, 2 passes, 1 lane); hashes run in a pool of
    # password_hash_concurrency threads, so memory stays under concurrency x memory.
    password_time_cost: Annotated[int, msgspec.Meta(ge=1, le=10)] = 2
    password_memory_kib: Annotated[int, msgspec.Meta(ge=1024, le=1_048_576)] = 19_456
    password_parallelism: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    password_hash_concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    # Brute-force limits, counted in Redis across all API processes.
    login_attempts_per_account: PositiveInt = 10
    login_attempts_per_address: PositiveInt = 50
    login_window_seconds: PositiveInt = 300
    register_attempts_per_address: PositiveInt = 10
    register_window_seconds: PositiveInt = 3600

    # Files. "local" keeps objects under files_dir (default <data_dir>/files).
    storage_backend: Literal["local", "s3"] = "local"
    files_dir: str | None = None
    # S3 (MinIO, or any S3 by endpoint URL). Credentials unset: the standard AWS chain.
    s3_endpoint_url: str | None = None
    s3_bucket: str = "tenantry"
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_part_size_mib: Annotated[int, msgspec.Meta(ge=5, le=512)] = 8
    # Seconds a presigned download URL lives; unset streams downloads through the API.
    s3_presign_seconds: Annotated[int, msgspec.Meta(ge=1, le=604_800)] | None = None
    upload_max_bytes: PositiveInt = 100 * 1024 * 1024
    # A tenant's default quota; a tenant's own "quota_bytes" setting overrides it.
    tenant_quota_bytes: PositiveInt = 1024 * 1024 * 1024
    upload_allowed_types: list[str] = msgspec.field(
        default_factory=lambda: [
            "image/png", "image/jpeg", "image/webp", "application/pdf", "text/plain",
        ]
    )  # fmt: skip
    # Background tasks (arq workers on Redis).
    worker_concurrency: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    task_timeout_seconds: PositiveInt = 600
    task_max_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 3
    task_retry_backoff_seconds: Seconds = 2.0
    task_queue_name: str = "tenantry:tasks"
    # Tasks in the queue at once (running ones included); the rest wait in their tenant's
    # backlog and are dispatched one tenant after the other. About the workers' slots in all
    # (workers x worker_concurrency): fewer leaves slots idle, more lets one tenant's backlog
    # get further ahead of another's first task.
    task_dispatch_window: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 40
    # Tasks of one tenant that may wait to run at once; more are refused with 429 (none: no
    # limit). A tenant's setting {"task_limits": {"pending": N}} overrides it.
    task_max_pending_per_tenant: Annotated[int, msgspec.Meta(ge=1)] | None = None
    # Tasks of one tenant that may run at once, whatever the workers' free slots (none: no
    # limit); the others wait their turn. {"task_limits": {"running": N}} overrides it.
    task_max_running_per_tenant: Annotated[int, msgspec.Meta(ge=1)] | None = None
    # Modules whose TASK_HANDLERS list more task handlers, beside the built-in ones and those
    # installed packages declare as entry points of the group "tenantry.tasks".
    task_modules: list[str] = msgspec.field(default_factory=list)
    # A running task's heartbeat period; three missed beats and the reaper takes it back.
    task_heartbeat_seconds: Seconds = 10.0
    # Days a deleted file stays recoverable before `tenantry files sweep` purges it.
    file_retention_days: NonNegativeInt = 7
    # Days an audit event is kept before the worker's daily purge (`tenantry audit purge`)
    # removes it. At least 1: the database refuses to purge events younger than a day.
    audit_retention_days: PositiveInt = 365
    # Off, no change appends an event (the trail's cost measured against none, or a deployment
    # that keeps its trail elsewhere); events already written stay readable.
    audit_trail: bool = True
    # Off, nothing is counted for usage metering (GET /api/v1/usage shows what was counted).
    usage_metering: bool = True
    # How often each process adds what it counted to Redis; the worker folds that into the
    # database every 30 seconds. A crash loses at most this much of the process's counting.
    usage_flush_seconds: Seconds = 5.0
    image_min_width: PositiveInt = 100
    image_min_height: PositiveInt = 100
    # Width x height an image may declare, checked on its header before anything decodes it
    # (Pillow's MAX_IMAGE_PIXELS, about 9500 x 9500).
    image_max_pixels: PositiveInt = 89_478_485
    # Webhooks. Endpoints must be https, and requests reach public addresses only, unless
    # these say otherwise; outside production both default to allowing plain http and
    # loopback addresses, so that a receiver on the same machine works.
    webhook_allow_http: bool | None = None
    # Networks (addresses or CIDR) requests may reach besides public addresses, checked on
    # the address each request connects to.
    webhook_allowed_networks: list[str] | None = None
    # Each request's whole exchange; its response body is read up to 1 KiB.
    webhook_timeout_seconds: Seconds = 5.0
    # The wait after a failed attempt: doubled each time from the first, up to the max.
    webhook_retry_seconds: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    webhook_retry_max_seconds: Annotated[float, msgspec.Meta(gt=0)] = 7200.0
    # A delivery still failing this long after its event is failed for good.
    webhook_give_up_after_seconds: Annotated[float, msgspec.Meta(gt=0)] = 86400.0
    # An endpoint failing every attempt this long, and at least that many times, is switched
    # off (PATCH active=true switches it on again).
    webhook_disable_after_seconds: Annotated[float, msgspec.Meta(ge=0)] = 5 * 86400.0
    webhook_disable_failures: PositiveInt = 10
    # How often an idle worker looks for due deliveries.
    webhook_poll_seconds: Seconds = 1.0
    # A claimed delivery is the worker's this long (more than the timeout): one whose worker
    # died is sent again when it ends.
    webhook_lease_seconds: Seconds = 60.0
    # Days a finished delivery stays in its endpoint's log.
    webhook_delivery_retention_days: PositiveInt = 30
    # Prometheus: the API's /metrics and its request metrics; each `tenantry worker` serves its
    # own on this port of `host` (0: none).
    metrics_enabled: bool = True
    worker_metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9100

    def __post_init__(self) -> None:
        if self.database_url is not None and not re.match(
            r"^postgres(ql)?(\+asyncpg)?://", self.database_url
        ):
            shown = redact_url(self.database_url)
            raise SettingsError(
                f"{PREFIX}DATABASE_URL: expected a postgresql:// URL, got {shown!r}"
            )
        if self.migration_database_url is not None and not re.match(
            r"^postgres(ql)?(\+asyncpg)?://", self.migration_database_url
        ):
            shown = redact_url(self.migration_database_url)
            raise SettingsError(
                f"{PREFIX}MIGRATION_DATABASE_URL: expected a postgresql:// URL, not {shown!r}"
            )
        if self.vault_addr is not None:
            if not re.match(r"^https?://", self.vault_addr):
                raise SettingsError(
                    f"{PREFIX}VAULT_ADDR: expected an http:// or https:// URL, "
                    f"got {self.vault_addr!r}"
                )
            if not self.vault_token and not (self.vault_role_id and self.vault_secret_id):
                raise SettingsError(
                    f"{PREFIX}VAULT_TOKEN: required with {PREFIX}VAULT_ADDR "
                    f"(or {PREFIX}VAULT_ROLE_ID and {PREFIX}VAULT_SECRET_ID for AppRole)"
                )
        if self.redis_url is not None and not re.match(r"^(redis|rediss|unix)://", self.redis_url):
            raise SettingsError(
                f"{PREFIX}REDIS_URL: expected a redis:// URL, got {redact_url(self.redis_url)!r}"
            )
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy)
            except ValueError:
                # uvicorn would take it as a literal that no peer address ever equals.
                raise SettingsError(
                    f"{PREFIX}TRUSTED_PROXIES: expected IP addresses or CIDR networks, "
                    f"got {proxy!r}"
                ) from None

        if self.webhook_lease_seconds <= self.webhook_timeout_seconds:
            raise SettingsError(
                f"{PREFIX}WEBHOOK_LEASE_SECONDS: must be more than "
                f"{PREFIX}WEBHOOK_TIMEOUT_SECONDS ({self.webhook_timeout_seconds:g})"
            )
        for network in self.webhook_allowed_networks or ():
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise SettingsError(
                    f"{PREFIX}WEBHOOK_ALLOWED_NETWORKS: expected IP addresses or CIDR networks, "
                    f"got {network!r}"
                ) from None

    def __repr__(self) -> str:
        shown = {name: getattr(self, name) for name in self.__struct_fields__}
        for name in ("database_url", "migration_database_url", "redis_url"):
            if shown[name] is not None:
                shown[name] = redact_url(shown[name])
        for name in SECRET_FIELDS:
            if shown[name] is not None:
                shown[name] = "***"
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    __str__ = __repr__

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def webhook_networks(self) -> list[str]:
        """Where webhook requests may go besides public addresses."""
        if self.webhook_allowed_networks is not None:
            return self.webhook_allowed_networks
        return [] if self.is_production else ["127.0.0.0/8", "::1/128"]

    @property
    def webhook_http(self) -> bool:
        """Whether webhook endpoints may be plain http."""
        return (
            not self.is_production if self.webhook_allow_http is None else self.webhook_allow_http
        )

    @property
    def json_logs(self) -> bool:
        return self.is_production if self.log_json is None else self.log_json

    @property
    def async_database_url(self) -> str:
        """The database URL with the asyncpg driver, whatever scheme the operator wrote."""
        url = self.required("database_url")
        return re.sub(r"^postgres(ql)?(\+asyncpg)?://", "postgresql+asyncpg://", url)

    @property
    def migration_url(self) -> str:
        """Where migrations run: the owner's URL, or the app's when no separate one is set."""
        return self.migration_database_url or self.required("database_url")

    def required(self, name: str) -> str:
        """The value of a setting this command cannot run without; stop naming it if unset."""
        value = getattr(self, name)
        if value is None:
            raise SettingsError(f"{PREFIX}{name.upper()}: required here but not set")
        return str(value)


def redact_url(url: str) -> str:
    """Hide the password of a URL so it can be shown in messages and logs."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file: ``KEY=VALUE`` lines, ``#`` comments, optional quotes."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"{path}:{number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _is_list(tp: Any) -> bool:
    return get_origin(tp) is list or any(get_origin(arg) is list for arg in get_args(tp))


def _convert(name: str, raw: str, tp: Any) -> Any:
    value: Any = raw
    if _is_list(tp):
        value = [] if not raw.strip() else [part.strip() for part in raw.split(",") if part.strip()]
    elif raw == "" and type(None) in get_args(tp):
        value = None
    try:
        return msgspec.convert(value, type=tp, strict=False)
    except msgspec.ValidationError as exc:
        if get_origin(tp) is Literal:
            expected = "Expected one of " + ", ".join(map(str, get_args(tp)))
        else:
            # "Expected `int`, got `str` - at `$`": the raw value we show says more than "str".
            expected = re.sub(r", got `[^`]*`", "", str(exc).split(" - at ")[0])
        raise SettingsError(f"{PREFIX}{name.upper()}: {expected} (got {raw!r})") from None


def load_settings(
    environ: Mapping[str, str] | None = None,
    env_file: Path | str | None = ".env",
    defaults: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Settings:
    """Build settings: ``defaults``, then ``.env``, then the environment, then ``overrides``."""
    sources: dict[str, str] = {}
    if env_file is not None:
        sources.update(read_env_file(Path(env_file)))
    sources.update(os.environ if environ is None else environ)

    fields = {f.name: f.type for f in msgspec.structs.fields(Settings)}
    values: dict[str, Any] = dict(defaults or {})
    for key, raw in sources.items():
        if not key.startswith(PREFIX) or key.startswith(_FOREIGN_PREFIXES):
            continue
        name = key.removeprefix(PREFIX).lower()
        if name not in fields:
            raise SettingsError(f"{key}: unknown setting (see .env.example for the list)")
        values[name] = _convert(name, raw, fields[name])
    values.update(overrides)
    return Settings(**values)

"""Secrets from HashiCorp Vault or OpenBao: the KV v2 engine through hvac.

Each named secret lives at a path of one KV v2 mount (settings ``vault_*_path``). Requests retry
connection errors and a sealed or restarting server (503) with exponential backoff, through
urllib3's ``Retry`` on the HTTP session; whatever still fails becomes ``SecretsUnavailable``
with a message naming the address, never a token or a value. hvac is synchronous, so every call
runs in a thread and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from tenantry.config import Settings
from tenantry.domain.errors import StaleVersion
from tenantry.domain.secrets import (
    DATABASE,
    KEYRING,
    S3,
    Secret,
    SecretNotFound,
    SecretsUnavailable,
)

T = TypeVar("T")

UNREACHABLE = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    hvac.exceptions.VaultDown,
    hvac.exceptions.VaultNotInitialized,
    hvac.exceptions.InternalServerError,
    hvac.exceptions.BadGateway,
    hvac.exceptions.RateLimitExceeded,
)


def retrying_session(retries: int) -> requests.Session:
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=0.2,
        status_forcelist=(502, 503, 504),
        # Retried statuses only for reads; a refused connection is safe to retry for any method.
        allowed_methods=frozenset({"GET", "LIST"}),
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class VaultSecrets:
    def __init__(
        self,
        *,
        addr: str,
        mount: str,
        paths: Mapping[str, str],
        token: str | None = None,
        role_id: str | None = None,
        secret_id: str | None = None,
        timeout: int = 5,
        retries: int = 3,
    ) -> None:
        self.addr = addr
        self.mount = mount
        self.paths = dict(paths)
        self._role_id = role_id
        self._secret_id = secret_id
        self._login_lock = threading.Lock()
        self.client = hvac.Client(
            url=addr, token=token, timeout=timeout, session=retrying_session(retries)
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> VaultSecrets:
        return cls(
            addr=settings.required("vault_addr"),
            mount=settings.vault_mount,
            paths={
                DATABASE: settings.vault_database_path,
                S3: settings.vault_s3_path,
                KEYRING: settings.vault_keyring_path,
            },
            token=settings.vault_token,
            role_id=settings.vault_role_id,
            secret_id=settings.vault_secret_id,
            timeout=settings.vault_timeout_seconds,
            retries=settings.vault_retries,
        )

    def __repr__(self) -> str:
        return f"VaultSecrets(addr={self.addr!r}, mount={self.mount!r})"

    def describe(self, name: str) -> str:
        return f"{self.mount}/{self.paths[name]} in Vault at {self.addr}"

    # Uncached: every read is fresh; CachedSecrets in front gives the port its cache.
    async def read(self, name: str, *, fresh: bool = False) -> Secret:  # noqa: ARG002
        path = self._path(name)
        response = await self._call(
            lambda: self.client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self.mount, raise_on_deleted_version=True
            ),
            name,
        )
        body = response["data"]
        return Secret(data=body["data"] or {}, version=int(body["metadata"]["version"]))

    async def write(self, name: str, data: Mapping[str, Any], *, cas: int) -> int:
        path = self._path(name)
        try:
            response = await self._call(
                lambda: self.client.secrets.kv.v2.create_or_update_secret(
                    path=path, secret=dict(data), cas=cas, mount_point=self.mount
                ),
                name,
            )
        except hvac.exceptions.InvalidRequest as error:
            if "check-and-set" in str(error):
                raise StaleVersion(f"The {name} secret changed since it was read.") from None
            raise SecretsUnavailable(f"Vault at {self.addr} refused to store {name}.") from None
        return int(response["data"]["version"])

    async def ping(self) -> None:
        path = self._path(KEYRING)
        await self._call(
            lambda: self.client.secrets.kv.v2.read_secret_metadata(
                path=path, mount_point=self.mount
            ),
            KEYRING,
        )

    def _path(self, name: str) -> str:
        if name not in self.paths:
            raise SecretNotFound(f"No Vault path is configured for the {name} secret.")
        return self.paths[name]

    async def _call(self, request: Callable[[], T], name: str) -> T:
        return await asyncio.to_thread(self._call_sync, request, name)

    def _call_sync(self, request: Callable[[], T], name: str) -> T:
        try:
            if self._role_id and not self.client.token:
                self._login()
            try:
                return request()
            except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
                if not self._role_id:
                    raise
                # An AppRole token expires: log in again once and retry.
                self._login()
                return request()
        except hvac.exceptions.InvalidPath:
            raise SecretNotFound(
                f"Vault holds no {name} secret at {self.describe(name)}; "
                "write it with `tenantry vault bootstrap`."
            ) from None
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
            raise SecretsUnavailable(
                f"Vault at {self.addr} refused access to {self.mount}/{self.paths.get(name)}: "
                "check TENANTRY_VAULT_TOKEN or the AppRole's policy."
            ) from None
        except UNREACHABLE as error:
            raise SecretsUnavailable(
                f"Cannot reach Vault at {self.addr} ({type(error).__name__}); "
                "check TENANTRY_VAULT_ADDR and that the server is up and unsealed."
            ) from None

    def _login(self) -> None:
        with self._login_lock:
            self.client.auth.approle.login(role_id=self._role_id, secret_id=self._secret_id)

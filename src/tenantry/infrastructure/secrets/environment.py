"""The default secret store: the database and S3 secrets from settings (the environment and
``.env``), the signing keyring in a local JSON file (mode 0600).

The keyring file carries its own version; writes take an exclusive lock on a sibling lock file
and check the version first, so the CLI and several API processes on one machine rotate safely.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy.engine import make_url

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


def keyring_file(settings: Settings) -> Path:
    return Path(settings.keyring_path or Path(settings.data_dir) / "keyring.json")


class EnvironmentSecrets:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keyring_path = keyring_file(settings)

    def __repr__(self) -> str:
        return f"EnvironmentSecrets(keyring={str(self.keyring_path)!r})"

    def describe(self, name: str) -> str:
        """Where an operator finds the secret, for error messages."""
        return str(self.keyring_path) if name == KEYRING else "the environment"

    # Uncached: every read is fresh; CachedSecrets in front gives the port its cache.
    async def read(self, name: str, *, fresh: bool = False) -> Secret:  # noqa: ARG002
        if name == KEYRING:
            return await asyncio.to_thread(self._read_keyring)
        values = self._from_settings(name)
        if not values:
            raise SecretNotFound(f"No {name} secret is set in the environment.")
        return Secret(data=values, version=1)

    def _from_settings(self, name: str) -> dict[str, str]:
        settings = self.settings
        values: dict[str, str | None] = {}
        if name == DATABASE:
            for key, url in (
                ("password", settings.database_url),
                ("migration_password", settings.migration_database_url),
            ):
                values[key] = make_url(url).password if url else None
        elif name == S3:
            values = {
                "access_key_id": settings.s3_access_key_id,
                "secret_access_key": settings.s3_secret_access_key,
            }
        return {key: value for key, value in values.items() if value}

    def _read_keyring(self) -> Secret:
        try:
            raw = self.keyring_path.read_bytes()
        except FileNotFoundError:
            raise SecretNotFound(
                f"No signing keyring at {self.keyring_path}; create one with `tenantry keys rotate`."
            ) from None
        except OSError as error:
            raise SecretsUnavailable(
                f"Cannot read the signing keyring at {self.keyring_path}: {error.strerror}."
            ) from None
        try:
            data = msgspec.json.decode(raw, type=dict[str, Any])
        except msgspec.DecodeError:
            raise SecretsUnavailable(
                f"The signing keyring at {self.keyring_path} is not valid JSON."
            ) from None
        # Files written before versions were kept count as version 1.
        version = int(data.pop("version", 1))
        return Secret(data=data, version=version)

    async def write(self, name: str, data: Mapping[str, Any], *, cas: int) -> int:
        if name != KEYRING:
            raise SecretsUnavailable(
                f"The {name} secret comes from the environment; set it there, not here."
            )
        return await asyncio.to_thread(self._write_keyring, data, cas)

    def _write_keyring(self, data: Mapping[str, Any], cas: int) -> int:
        path = self.keyring_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            try:
                current = self._read_keyring().version
            except SecretNotFound:
                current = 0
            if current != cas:
                raise StaleVersion("The signing keyring changed since it was read.")
            version = cas + 1
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(msgspec.json.format(msgspec.json.encode({**data, "version": version})))
            os.replace(temporary, path)
        return version

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.keyring_path.with_suffix(".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    async def ping(self) -> None:
        await self.read(KEYRING)

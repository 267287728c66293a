"""Ports: what the application needs from the outside world, as small Protocols."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self
from uuid import UUID

from tenantry.domain.auth import AccessClaims, ApiKey, RefreshToken
from tenantry.domain.documents import Document
from tenantry.domain.files import StoredFile
from tenantry.domain.projects import ListQuery, Project
from tenantry.domain.secrets import Secret
from tenantry.domain.tasks import Task, TaskLog, TaskStats, TaskStatus
from tenantry.domain.tenants import NewTenant, Tenant, TenantStatus
from tenantry.domain.users import NewUser, Role, User


class Clock(Protocol):
    def now(self) -> datetime: ...


class TenantRepository(Protocol):
    """Tenants are platform data: this repository spans every tenant on purpose."""

    async def add(self, tenant: NewTenant) -> Tenant:
        """Store a new tenant; raise ``Conflict`` when its slug is taken."""
        ...

    async def get(self, tenant_id: UUID) -> Tenant | None: ...

    async def get_by_slug(self, slug: str) -> Tenant | None: ...

    async def list(self, *, limit: int, offset: int) -> tuple[list[Tenant], int]: ...

    async def update(
        self,
        tenant_id: UUID,
        *,
        status: TenantStatus | None = None,
        settings: dict[str, Any] | None = None,
    ) -> Tenant | None: ...


class UserRepository(Protocol):
    """Users of one tenant; built for that tenant and unable to see others."""

    async def add(self, user: NewUser) -> User:
        """Store a new user; raise ``Conflict`` naming the taken email or username."""
        ...

    async def get(self, user_id: UUID) -> User | None: ...

    async def find_by_login(self, login: str) -> tuple[User, str] | None:
        """The user whose email or username is ``login``, with their password hash."""
        ...

    async def list(self, *, limit: int, offset: int) -> tuple[list[User], int]: ...

    async def update(
        self,
        user_id: UUID,
        *,
        email: str | None = None,
        roles: tuple[Role, ...] | None = None,
        is_active: bool | None = None,
        settings: dict[str, Any] | None = None,
    ) -> User | None: ...

    async def set_password_hash(self, user_id: UUID, password_hash: str) -> None: ...

    async def record_login(self, user_id: UUID, at: datetime) -> None: ...

    async def delete(self, user_id: UUID) -> bool: ...

    async def active_roles(
        self, user_id: UUID, *, session_id: UUID | None = None
    ) -> tuple[Role, ...] | None:
        """The user's roles while both the user and the tenant are active and, when a session
        (refresh-token family) is named, it was not revoked; else None."""
        ...

    async def lock_active_owners(self) -> set[UUID]:
        """The ids of the tenant's active owners, read after locking the tenant's owners until
        the transaction ends: concurrent callers take turns, each reading what the last one
        committed."""
        ...


class RefreshTokenRepository(Protocol):
    async def add(
        self, *, user_id: UUID, family_id: UUID, token_hash: str, expires_at: datetime
    ) -> RefreshToken: ...

    async def get_by_hash(self, token_hash: str) -> RefreshToken | None: ...

    async def mark_used(self, token_id: UUID, at: datetime) -> bool:
        """Mark an unused token used; False when it was used already (a replay or a race)."""
        ...

    async def revoke_family(self, family_id: UUID, at: datetime) -> None: ...


class ApiKeyRepository(Protocol):
    async def add(
        self,
        *,
        user_id: UUID,
        name: str,
        prefix: str,
        key_hash: str,
        expires_at: datetime | None,
    ) -> ApiKey: ...

    async def get_by_prefix(self, prefix: str) -> ApiKey | None: ...

    async def list_for_user(self, user_id: UUID) -> list[ApiKey]: ...

    async def revoke(self, api_key_id: UUID, *, user_id: UUID, at: datetime) -> bool: ...

    async def touch(self, api_key_id: UUID, at: datetime) -> None: ...


class ProjectRepository(Protocol):
    """Live (not deleted) projects of one tenant."""

    async def add(self, *, owner_id: UUID | None, name: str, description: str) -> Project: ...

    async def get(self, project_id: UUID) -> Project | None: ...

    async def list(self, query: ListQuery) -> tuple[list[Project], int]: ...

    async def update(
        self,
        project_id: UUID,
        *,
        expected_version: int | None,
        name: str | None = None,
        description: str | None = None,
    ) -> Project | None:
        """Apply changes and bump the version; raise ``StaleVersion`` when
        ``expected_version`` is given and no longer current; None when there is no project."""
        ...

    async def soft_delete(self, project_id: UUID, at: datetime) -> bool:
        """Mark the project and all its documents deleted."""
        ...


class DocumentRepository(Protocol):
    """Live documents of one tenant."""

    async def add(
        self,
        *,
        project_id: UUID,
        created_by: UUID | None,
        title: str,
        content: str,
        metadata: dict[str, Any],
    ) -> Document: ...

    async def get(self, project_id: UUID, document_id: UUID) -> Document | None: ...

    async def list(self, project_id: UUID, query: ListQuery) -> tuple[list[Document], int]: ...

    async def update(
        self,
        project_id: UUID,
        document_id: UUID,
        *,
        expected_version: int | None,
        title: str | None = None,
        content: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Document | None: ...

    async def soft_delete(self, project_id: UUID, document_id: UUID, at: datetime) -> bool: ...


class FileRepository(Protocol):
    """File rows of one tenant."""

    async def add(self, file: StoredFile) -> StoredFile: ...

    async def get(self, file_id: UUID, *, include_deleted: bool = False) -> StoredFile | None: ...

    async def list(
        self, query: ListQuery, *, include_deleted: bool = False
    ) -> tuple[list[StoredFile], int]: ...

    async def soft_delete(self, file_id: UUID, at: datetime) -> bool: ...

    async def usage(self) -> tuple[int, int]:
        """Bytes and count of the tenant's live files."""
        ...

    async def lock_usage(self) -> None:
        """Serialise quota decisions of this tenant until the transaction ends."""
        ...

    async def deleted_before(self, cutoff: datetime, *, limit: int) -> Sequence[StoredFile]:
        """Soft-deleted files whose grace period ended before ``cutoff``."""
        ...

    async def set_metadata(self, file_id: UUID, metadata: dict[str, Any]) -> None: ...

    async def purge(self, file_id: UUID) -> None:
        """Remove the row for good (its object is gone already)."""
        ...


class TaskRepository(Protocol):
    """Tasks of one tenant. Status changes are conditional updates: the row decides."""

    async def add(
        self,
        *,
        task_id: UUID,
        task_type: str,
        config: dict[str, Any],
        input_files: Sequence[UUID],
        created_by: UUID | None,
    ) -> Task: ...

    async def get(self, task_id: UUID) -> Task | None: ...

    async def list(
        self, query: ListQuery, *, status: TaskStatus | None, task_type: str | None
    ) -> tuple[Sequence[Task], int]: ...

    async def start(self, task_id: UUID, *, at: datetime, max_attempts: int) -> Task | None:
        """pending (or processing, after a crash) -> processing, counting the attempt in the
        row (``retry_count`` + 1 is its number); None when it is not runnable. A task whose
        cancellation was asked for ends as cancelled here instead, and one whose attempts are
        spent (its last worker died) as failed."""
        ...

    async def progress(self, task_id: UUID, percent: int) -> None:
        """Raise the progress; it never goes backwards."""
        ...

    async def finish(
        self,
        task_id: UUID,
        status: TaskStatus,
        *,
        at: datetime,
        result: dict[str, Any] | None = None,
        error_message: str | None = None,
        output_files: Sequence[UUID] | None = None,
    ) -> None: ...

    async def back_to_pending(self, task_id: UUID, *, error_message: str) -> None: ...

    async def heartbeat(self, task_id: UUID) -> None: ...

    async def stale(self, before: datetime, *, limit: int) -> Sequence[Task]:
        """Tasks in processing whose worker has not beaten since ``before``."""
        ...

    async def cancel(self, task_id: UUID, at: datetime) -> Task | None:
        """Cancel a pending task at once, or ask a running one to stop. None when finished."""
        ...

    async def cancel_unfinished(self, at: datetime, *, error_message: str) -> int:
        """Cancel every pending task of the tenant at once, with ``error_message``, and ask
        every running one to stop; how many tasks that touched."""
        ...

    async def add_log(
        self,
        task_id: UUID,
        *,
        attempt: int,
        operation: str,
        success: bool,
        duration_ms: float,
        error: str | None,
    ) -> None: ...

    async def logs(self, task_id: UUID) -> Sequence[TaskLog]: ...

    async def stats(self) -> TaskStats: ...


class JobQueue(Protocol):
    """Carries task ids to workers. The job id is the task id: a double submit runs once."""

    async def enqueue(self, task: Task, *, request_id: str | None) -> None: ...


class TaskMetrics(Protocol):
    """Counts task attempts by type and outcome, and times them, for the dashboards.

    Every started attempt ends in exactly one of the other four, with the handler's seconds.
    """

    def started(self, task_type: str) -> None: ...

    def succeeded(self, task_type: str, seconds: float) -> None: ...

    def failed(self, task_type: str, seconds: float) -> None:
        """Failed for good: a permanent error, or a retryable one with no attempts left."""
        ...

    def retried(self, task_type: str, seconds: float) -> None:
        """Failed with a retryable error; another attempt follows after a backoff."""
        ...

    def cancelled(self, task_type: str, seconds: float) -> None: ...


class ObjectStorage(Protocol):
    """Where file bytes live. Keys are ``tenants/{tenant_id}/files/{file_id}``."""

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> None:
        """Store the stream under ``key``; on any error nothing is left under it."""
        ...

    def get(self, key: str, *, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes from ``start`` to ``end`` (inclusive), streamed."""
        ...

    async def delete(self, key: str) -> None: ...

    def objects(self, prefix: str) -> AsyncIterator[tuple[str, datetime]]:
        """Every key under ``prefix`` with its last modification time."""
        ...

    async def download_url(self, key: str, *, filename: str, content_type: str) -> str | None:
        """A short-lived URL the client can fetch the object from directly, if the store has one."""
        ...

    async def ping(self) -> None: ...


class UnitOfWork(Protocol):
    """One transaction around one use case: commit explicitly, roll back otherwise."""

    @property
    def tenants(self) -> TenantRepository: ...

    def users(self, tenant_id: UUID) -> UserRepository: ...

    def refresh_tokens(self, tenant_id: UUID) -> RefreshTokenRepository: ...

    def api_keys(self, tenant_id: UUID) -> ApiKeyRepository: ...

    def projects(self, tenant_id: UUID) -> ProjectRepository: ...

    def documents(self, tenant_id: UUID) -> DocumentRepository: ...

    def files(self, tenant_id: UUID) -> FileRepository: ...

    def tasks(self, tenant_id: UUID) -> TaskRepository: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


class PasswordHasher(Protocol):
    async def hash(self, password: str) -> str: ...

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Check a password; with no hash (unknown user) spend the same time and say False."""
        ...

    def needs_rehash(self, password_hash: str) -> bool: ...


class AccessTokens(Protocol):
    """Signing and checking may re-read the keyring from the secret store, hence async."""

    async def issue(
        self, *, user_id: UUID, tenant_id: UUID, roles: tuple[Role, ...], session_id: UUID
    ) -> str:
        """A token of the session ``session_id`` (its refresh-token family)."""
        ...

    async def verify(self, token: str) -> AccessClaims:
        """The claims of a valid token; raise ``Unauthenticated`` for anything else."""
        ...

    @property
    def ttl_seconds(self) -> int: ...


class SecretStore(Protocol):
    """Named secrets (``tenantry.domain.secrets.NAMES``) with versions for check-and-set."""

    async def read(self, name: str, *, fresh: bool = False) -> Secret:
        """The secret, from a cache unless ``fresh``; raise ``SecretNotFound`` when the store
        holds none and ``SecretsUnavailable`` when it cannot be reached."""
        ...

    async def write(self, name: str, data: Mapping[str, Any], *, cas: int) -> int:
        """Store a new version only if the current one is ``cas`` (0: none yet); return the new
        version, or raise ``StaleVersion`` when another writer came first."""
        ...

    async def ping(self) -> None:
        """Raise unless the store answers and lets us read."""
        ...

    def describe(self, name: str) -> str:
        """Where an operator finds the secret, for messages (never its value)."""
        ...


class RateLimiter(Protocol):
    async def hit(self, key: str, *, limit: int, window_seconds: int) -> int | None:
        """Count one attempt; the seconds to wait when over the limit, else None."""
        ...

    async def retry_after(self, key: str, *, limit: int) -> int | None:
        """The seconds to wait when ``key`` is already over ``limit``, else None; counts
        nothing (for limits on failures only, checked before the attempt)."""
        ...

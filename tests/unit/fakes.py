"""In-memory fakes of the ports, for fast use-case tests with no I/O.

One ``FakeStore`` holds the committed state; a ``FakeUnitOfWork`` works on a copy and writes it
back only on commit, so a use case that fails midway leaves the store as it was.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast, get_args, get_origin
from uuid import UUID, uuid4

import msgspec

from tenantry.application.auth import AuthPolicy, Identity
from tenantry.domain.api_keys import ApiKeyRepository
from tenantry.domain.audit import AuditEvent, AuditQuery, AuditRepository
from tenantry.domain.auth import (
    AccessClaims,
    ApiKey,
    Attempt,
    RefreshToken,
    RefreshTokenRepository,
)
from tenantry.domain.documents import Document, DocumentRepository
from tenantry.domain.errors import (
    INVALID_CREDENTIALS,
    Conflict,
    NotFound,
    StaleVersion,
    Unauthenticated,
)
from tenantry.domain.files import FileRepository, QuotaRefused, StoredFile
from tenantry.domain.projects import Project
from tenantry.domain.repository import ListQuery, Repository
from tenantry.domain.secrets import Secret, SecretNotFound
from tenantry.domain.tasks import (
    FINISHED,
    TENANT_SUSPENDED,
    WORKER_LOST,
    AttemptEnd,
    Task,
    TaskLog,
    TaskRepository,
    TaskStats,
    TaskStatus,
    TaskSweeps,
)
from tenantry.domain.tenants import NewTenant, Tenant, TenantStatus
from tenantry.domain.users import NewUser, Role, User, UserRepository
from tenantry.domain.webhooks import (
    DeliveryAttempt,
    DeliveryStatus,
    DueDelivery,
    WebhookDelivery,
    WebhookDeliveryRepository,
    WebhookDispatch,
    WebhookEndpoint,
    WebhookEndpointRepository,
)

T = TypeVar("T")
R = TypeVar("R")
# A check the next transaction begins with: whether it holds, read in that transaction.
Check = Callable[["FakeUserRepository"], Awaitable[bool]]


@dataclass
class FakeStore:
    tenants: dict[UUID, Tenant] = field(default_factory=dict)
    users: dict[UUID, User] = field(default_factory=dict)
    password_hashes: dict[UUID, str] = field(default_factory=dict)
    refresh_tokens: dict[UUID, tuple[RefreshToken, str]] = field(default_factory=dict)
    api_keys: dict[UUID, ApiKey] = field(default_factory=dict)
    projects: dict[UUID, Project] = field(default_factory=dict)
    documents: dict[UUID, Document] = field(default_factory=dict)
    deleted: set[UUID] = field(default_factory=set)
    files: dict[UUID, StoredFile] = field(default_factory=dict)
    tasks: dict[UUID, Task] = field(default_factory=dict)
    task_logs: list[TaskLog] = field(default_factory=list)
    # The last heartbeat of every task that ever started (the row's heartbeat_at).
    heartbeats: dict[UUID, datetime] = field(default_factory=dict)
    # Rows of entities with no dict of their own above.
    tables: dict[type[Any], dict[UUID, Any]] = field(default_factory=dict)

    def rows_of(self, entity: type[Any]) -> dict[UUID, Any]:
        named: dict[type[Any], dict[UUID, Any]] = {
            Project: self.projects,
            Document: self.documents,
            StoredFile: self.files,
            Task: self.tasks,
        }
        return named[entity] if entity in named else self.tables.setdefault(entity, {})


class FakeClock:
    def __init__(self) -> None:
        self.current = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


class FakeTenantRepository:
    def __init__(self, store: FakeStore, clock: FakeClock) -> None:
        self.store = store
        self.clock = clock

    async def add(self, tenant: NewTenant) -> Tenant:
        if any(row.slug == tenant.slug for row in self.store.tenants.values()):
            raise Conflict("taken", fields={"slug": "is taken"})
        now = self.clock.now()
        stored = Tenant(
            id=uuid4(),
            name=tenant.name,
            slug=tenant.slug,
            status=TenantStatus.ACTIVE,
            settings=dict(tenant.settings),
            created_at=now,
            updated_at=now,
        )
        self.store.tenants[stored.id] = stored
        return stored

    async def get(self, tenant_id: UUID) -> Tenant | None:
        return self.store.tenants.get(tenant_id)

    async def get_by_slug(self, slug: str, *, alone: bool = False) -> Tenant | None:
        return next((row for row in self.store.tenants.values() if row.slug == slug), None)

    async def list(self, *, limit: int, offset: int) -> tuple[list[Tenant], int]:
        rows = list(self.store.tenants.values())
        return rows[offset : offset + limit], len(rows)

    async def with_setting(self, name: str) -> dict[UUID, Any]:
        return {
            row.id: row.settings[name]
            for row in self.store.tenants.values()
            if name in row.settings
        }

    async def update(
        self,
        tenant_id: UUID,
        *,
        status: TenantStatus | None = None,
        settings: dict[str, Any] | None = None,
    ) -> Tenant | None:
        row = self.store.tenants.get(tenant_id)
        if row is None:
            return None
        changes: dict[str, Any] = {}
        if status is not None:
            changes["status"] = status
        if settings is not None:
            changes["settings"] = settings
        self.store.tenants[tenant_id] = msgspec.structs.replace(row, **changes)
        return self.store.tenants[tenant_id]


class FakeUserRepository:
    def __init__(self, store: FakeStore, tenant_id: UUID, clock: FakeClock) -> None:
        self.store = store
        self.tenant_id = tenant_id
        self.clock = clock

    def _mine(self) -> list[User]:
        return [u for u in self.store.users.values() if u.tenant_id == self.tenant_id]

    async def add(self, user: NewUser) -> User:
        for other in self._mine():
            if other.email.lower() == user.email.lower():
                raise Conflict("taken", fields={"email": "is taken"})
            if other.username.lower() == user.username.lower():
                raise Conflict("taken", fields={"username": "is taken"})
        now = self.clock.now()
        stored = User(
            id=uuid4(),
            tenant_id=self.tenant_id,
            username=user.username,
            email=user.email,
            roles=user.roles,
            settings={},
            is_active=True,
            created_at=now,
            updated_at=now,
        )
        self.store.users[stored.id] = stored
        self.store.password_hashes[stored.id] = user.password_hash
        return stored

    async def get(self, user_id: UUID) -> User | None:
        user = self.store.users.get(user_id)
        return user if user is not None and user.tenant_id == self.tenant_id else None

    async def find_by_login(
        self,
        login: str,
        *,
        alone: bool = False,
    ) -> tuple[User, str] | None:
        for user in self._mine():
            if login.lower() in (user.email.lower(), user.username.lower()):
                return user, self.store.password_hashes[user.id]
        return None

    async def list(self, *, limit: int, offset: int) -> tuple[list[User], int]:
        rows = self._mine()
        return rows[offset : offset + limit], len(rows)

    async def update(self, user_id: UUID, **changes: Any) -> User | None:
        user = await self.get(user_id)
        if user is None:
            return None
        given = {name: value for name, value in changes.items() if value is not None}
        self.store.users[user_id] = msgspec.structs.replace(user, **given)
        return self.store.users[user_id]

    async def set_password_hash(self, user_id: UUID, password_hash: str) -> None:
        if await self.get(user_id) is not None:
            self.store.password_hashes[user_id] = password_hash

    async def record_login(self, user_id: UUID, at: datetime) -> None:
        await self.update(user_id, last_login_at=at)

    async def delete(self, user_id: UUID) -> bool:
        if await self.get(user_id) is None:
            return False
        del self.store.users[user_id]
        return True

    async def active_roles(
        self,
        user_id: UUID,
        *,
        session_id: UUID | None = None,
        claimed: tuple[Role, ...] | None = None,
        held: bool = False,
    ) -> tuple[Role, ...] | None:
        user = await self.get(user_id)
        tenant = self.store.tenants.get(self.tenant_id)
        if user is None or tenant is None or not user.is_active:
            return None
        revoked = any(
            token.tenant_id == self.tenant_id
            and token.family_id == session_id
            and token.revoked_at is not None
            for token, _ in self.store.refresh_tokens.values()
        )
        if tenant.status != TenantStatus.ACTIVE or revoked:
            return None
        # As the database's confirmation: the claimed roles, when they are the user's.
        return claimed if claimed is not None and set(claimed) == set(user.roles) else user.roles

    def confirm_roles_first(
        self, user_id: UUID, *, session_id: UUID | None, claimed: tuple[Role, ...]
    ) -> None:
        async def holds(users: FakeUserRepository) -> bool:
            roles = await users.active_roles(user_id, session_id=session_id)
            return roles is not None and set(roles) == set(claimed)

        self.check_first(self.tenant_id, holds)

    def check_first(self, tenant_id: UUID, holds: Check) -> None:
        """Set by the unit of work, which runs the check as its next transaction begins."""
        raise NotImplementedError

    async def lock_active_owners(self) -> set[UUID]:
        # One fake unit of work runs at a time: nothing to lock.
        return {u.id for u in self._mine() if u.is_active and Role.OWNER in u.roles}


class FakeRefreshTokenRepository:
    def __init__(self, store: FakeStore, tenant_id: UUID, clock: FakeClock) -> None:
        self.store = store
        self.tenant_id = tenant_id
        # Set by the unit of work: a statement alone is committed at once.
        self.commit_alone: Callable[[], Awaitable[None]] | None = None

    async def add(
        self, *, user_id: UUID, family_id: UUID, token_hash: str, expires_at: datetime
    ) -> RefreshToken:
        token = RefreshToken(
            id=uuid4(),
            tenant_id=self.tenant_id,
            user_id=user_id,
            family_id=family_id,
            expires_at=expires_at,
            used_at=None,
            revoked_at=None,
        )
        self.store.refresh_tokens[token.id] = (token, token_hash)
        return token

    async def start_session(
        self,
        *,
        user_id: UUID,
        family_id: UUID,
        token_hash: str,
        expires_at: datetime,
        signed_in_at: datetime,
        alone: bool = False,
    ) -> bool:
        user = self.store.users.get(user_id)
        tenant = self.store.tenants.get(self.tenant_id)
        if (
            user is None
            or user.tenant_id != self.tenant_id
            or not user.is_active
            or tenant is None
            or tenant.status != TenantStatus.ACTIVE
        ):
            return False
        self.store.users[user_id] = msgspec.structs.replace(user, last_login_at=signed_in_at)
        await self.add(
            user_id=user_id, family_id=family_id, token_hash=token_hash, expires_at=expires_at
        )
        if alone and self.commit_alone is not None:
            await self.commit_alone()
        return True

    async def get_by_hash(self, token_hash: str) -> RefreshToken | None:
        for token, stored_hash in self.store.refresh_tokens.values():
            if stored_hash == token_hash and token.tenant_id == self.tenant_id:
                return token
        return None

    async def mark_used(self, token_id: UUID, at: datetime) -> bool:
        token, token_hash = self.store.refresh_tokens[token_id]
        if token.used_at is not None:
            return False
        self.store.refresh_tokens[token_id] = (
            msgspec.structs.replace(token, used_at=at),
            token_hash,
        )
        return True

    async def revoke_family(self, family_id: UUID, at: datetime) -> None:
        for token_id, (token, token_hash) in list(self.store.refresh_tokens.items()):
            if token.family_id == family_id and token.revoked_at is None:
                revoked = msgspec.structs.replace(token, revoked_at=at)
                self.store.refresh_tokens[token_id] = (revoked, token_hash)


class FakeApiKeyRepository:
    def __init__(self, store: FakeStore, tenant_id: UUID, clock: FakeClock) -> None:
        self.store = store
        self.tenant_id = tenant_id
        self.clock = clock

    async def add(
        self, *, user_id: UUID, name: str, prefix: str, key_hash: str, expires_at: datetime | None
    ) -> ApiKey:
        key = ApiKey(
            id=uuid4(),
            tenant_id=self.tenant_id,
            user_id=user_id,
            name=name,
            prefix=prefix,
            key_hash=key_hash,
            created_at=self.clock.now(),
            expires_at=expires_at,
            last_used_at=None,
            revoked_at=None,
        )
        self.store.api_keys[key.id] = key
        return key

    async def get_by_prefix(self, prefix: str) -> ApiKey | None:
        return next(
            (
                k
                for k in self.store.api_keys.values()
                if k.tenant_id == self.tenant_id and k.prefix == prefix
            ),
            None,
        )

    async def list_for_user(self, user_id: UUID) -> list[ApiKey]:
        return [
            k
            for k in self.store.api_keys.values()
            if k.tenant_id == self.tenant_id and k.user_id == user_id and k.revoked_at is None
        ]

    def confirm_again_at_write(
        self, api_key_id: UUID, *, user_id: UUID, roles: tuple[Role, ...]
    ) -> None:
        async def holds(users: FakeUserRepository) -> bool:
            key = users.store.api_keys.get(api_key_id)
            now = users.clock.now()
            if key is None or key.user_id != user_id or key.revoked_at is not None:
                return False
            if key.expires_at is not None and key.expires_at <= now:
                return False
            active = await users.active_roles(user_id)
            return active is not None and set(active) == set(roles)

        self.check_later(self.tenant_id, holds)

    def check_later(self, tenant_id: UUID, holds: Check) -> None:
        """Set by the unit of work, which keeps the check for a write that asks for it."""
        raise NotImplementedError

    async def revoke(self, api_key_id: UUID, *, user_id: UUID, at: datetime) -> bool:
        key = self.store.api_keys.get(api_key_id)
        if key is None or key.tenant_id != self.tenant_id or key.user_id != user_id:
            return False
        if key.revoked_at is not None:
            return False
        self.store.api_keys[api_key_id] = msgspec.structs.replace(key, revoked_at=at)
        return True

    async def touch(self, api_key_id: UUID, at: datetime) -> None:
        key = self.store.api_keys[api_key_id]
        self.store.api_keys[api_key_id] = msgspec.structs.replace(key, last_used_at=at)


def page(rows: list[Any], query: ListQuery, search: str | None) -> tuple[list[Any], int]:
    if query.q and search is not None:
        rows = [r for r in rows if query.q.lower() in getattr(r, search).lower()]
    if query.created_after:
        rows = [r for r in rows if r.created_at >= query.created_after]
    if query.created_before:
        rows = [r for r in rows if r.created_at <= query.created_before]
    key = query.order_by.removeprefix("-")
    rows = sorted(rows, key=lambda r: getattr(r, key), reverse=query.order_by.startswith("-"))
    return rows[query.offset : query.offset + query.limit], len(rows)


class MemoryRepository(Generic[T]):
    """The generic tenant repository (domain/repository.py) over one dict of the store: one
    fake serves every entity with plain CRUD. Soft deletion sets ``deleted_at`` where the
    entity has it, else marks the id in ``store.deleted``."""

    def __init__(
        self, store: FakeStore, tenant_id: UUID, clock: FakeClock, entity: type[T]
    ) -> None:
        self.store, self.tenant_id, self.clock, self.entity = store, tenant_id, clock, entity
        self.rows: dict[UUID, T] = store.rows_of(entity)
        self.fields = {f.name for f in msgspec.structs.fields(entity)}  # type: ignore[arg-type]

    def _deleted(self, row: Any) -> bool:
        if "deleted_at" in self.fields:
            return row.deleted_at is not None
        return row.id in self.store.deleted

    def _mine(self, include_deleted: bool, where: Mapping[str, Any]) -> list[T]:
        return [
            row
            for row in self.rows.values()
            if row.tenant_id == self.tenant_id  # type: ignore[attr-defined]
            and (include_deleted or not self._deleted(row))
            and all(getattr(row, name) == value for name, value in where.items())
        ]

    async def get(self, id: UUID, /, *, include_deleted: bool = False, **where: Any) -> T | None:
        return next(
            (r for r in self._mine(include_deleted, where) if r.id == id),  # type: ignore[attr-defined]
            None,
        )

    async def count(self, *, include_deleted: bool = False, **where: Any) -> int:
        return len(self._mine(include_deleted, where))

    async def add(self, **values: Any) -> T:
        now = self.clock.now()
        defaults = {"id": uuid4(), "created_at": now, "updated_at": now, "version": 1}
        fields = {k: v for k, v in defaults.items() if k in self.fields} | dict(values)
        row = self.entity(**fields, tenant_id=self.tenant_id)
        self.rows[row.id] = row  # type: ignore[attr-defined]
        return row

    async def add_at_commit(self, **values: Any) -> T:
        # The working copy is what a commit keeps: as the real one, written with the commit.
        return await self.add(**values)

    async def add_many(self, rows: Sequence[Mapping[str, Any]]) -> list[T]:
        return [await self.add(**row) for row in rows]

    async def update(
        self,
        id: UUID,
        changes: Mapping[str, Any],
        /,
        *,
        expected_version: int | None = None,
        **where: Any,
    ) -> T | None:
        row: Any = await self.get(id, **where)
        if row is None:
            return None
        bump: dict[str, Any] = (
            {"updated_at": self.clock.now()} if "updated_at" in self.fields else {}
        )
        if "version" in self.fields:
            if expected_version is not None and expected_version != row.version:
                raise StaleVersion("stale")
            bump["version"] = row.version + 1
        self.rows[id] = msgspec.structs.replace(row, **changes, **bump)
        return self.rows[id]

    async def update_with_before(
        self,
        id: UUID,
        changes: Mapping[str, Any],
        /,
        *,
        expected_version: int | None = None,
        **where: Any,
    ) -> tuple[T, T] | None:
        before = await self.get(id, **where)
        after = await self.update(id, changes, expected_version=expected_version, **where)
        return None if before is None or after is None else (before, after)

    async def soft_delete(self, id: UUID, /, at: datetime, **where: Any) -> T | None:
        row: Any = await self.get(id, **where)
        if row is None:
            return None
        if "deleted_at" in self.fields:
            self.rows[id] = row = msgspec.structs.replace(row, deleted_at=at)
        else:
            self.store.deleted.add(id)
        return row  # type: ignore[no-any-return]

    async def soft_delete_all_at_commit(self, at: datetime, **where: Any) -> None:
        # The working copy is what a commit keeps (as add_at_commit).
        rows: list[Any] = self._mine(False, where)
        for row in rows:
            await self.soft_delete(row.id, at)

    async def delete(self, id: UUID, /, **where: Any) -> bool:
        return (
            self.rows.pop(id, None) is not None
            if await self.get(id, include_deleted=True, **where)
            else False
        )

    async def list(
        self, query: ListQuery, /, *, include_deleted: bool = False, **where: Any
    ) -> tuple[list[T], int]:
        return page(
            self._mine(include_deleted, where), query, getattr(self.entity, "search_field", None)
        )


class FakeDocumentRepository(MemoryRepository[Document]):
    def __init__(self, store: FakeStore, tenant_id: UUID, clock: FakeClock) -> None:
        super().__init__(store, tenant_id, clock, Document)

    async def add_at_commit(self, **values: Any) -> Document:
        # As the commit's check: only into a live project of the tenant.
        projects = MemoryRepository(self.store, self.tenant_id, self.clock, Project)
        if await projects.get(values["project_id"]) is None:
            raise NotFound("No such project.")
        return await super().add_at_commit(**values)


@dataclass
class FileHold:
    """What an upload in progress holds of its tenant's quota (the file_reservations row)."""

    tenant_id: UUID
    bytes: int
    expires_at: datetime


class FakeFileRepository(MemoryRepository[StoredFile]):
    def __init__(self, store: FakeStore, tenant_id: UUID, clock: FakeClock) -> None:
        super().__init__(store, tenant_id, clock, StoredFile)
        self.holds: dict[UUID, FileHold] = store.tables.setdefault(FileHold, {})

    async def usage(self) -> tuple[int, int]:
        live = self._mine(False, {})
        return sum(f.size for f in live), len(live)

    async def quota_setting(self) -> Any:
        tenant = self.store.tenants.get(self.tenant_id)
        return tenant.settings.get("quota_bytes") if tenant else None

    def _held(self) -> int:
        return sum(h.bytes for h in self.holds.values() if h.tenant_id == self.tenant_id)

    async def _quota(self, default_quota: int) -> int:
        own = await self.quota_setting()
        valid = isinstance(own, int) and not isinstance(own, bool) and own >= 0
        return own if valid else default_quota

    async def reserve(
        self, file_id: UUID, size: int, *, default_quota: int, expires_at: datetime
    ) -> bool:
        used, _ = await self.usage()
        if used + self._held() + size > await self._quota(default_quota):
            return False
        before = self.holds.get(file_id)
        self.holds[file_id] = FileHold(
            self.tenant_id, size + (before.bytes if before else 0), expires_at
        )
        return True

    async def add_reserved(self, *, default_quota: int, **values: Any) -> StoredFile:
        hold = self.holds.get(values["id"])
        held = hold.bytes if hold else 0
        used, _ = await self.usage()
        quota = await self._quota(default_quota)
        if values["size"] > held and used + self._held() - held + values["size"] > quota:
            raise QuotaRefused
        self.holds.pop(values["id"], None)
        return await self.add(**values)

    async def release(self, file_id: UUID) -> None:
        self.holds.pop(file_id, None)

    async def release_expired(self, now: datetime) -> int:
        expired = {
            file_id: hold
            for file_id, hold in self.holds.items()
            if hold.tenant_id == self.tenant_id and hold.expires_at < now
        }
        for file_id in expired:
            del self.holds[file_id]
        return sum(hold.bytes for hold in expired.values())

    async def deleted_before(self, cutoff: datetime, *, limit: int) -> list[StoredFile]:
        gone = [
            f for f in self._mine(True, {}) if f.deleted_at is not None and f.deleted_at < cutoff
        ]
        return gone[:limit]


class FakeTaskRepository(MemoryRepository[Task]):
    def __init__(self, store: FakeStore, tenant_id: UUID, clock: FakeClock) -> None:
        super().__init__(store, tenant_id, clock, Task)

    def _set(self, task: Task, **changes: Any) -> Task:
        self.store.tasks[task.id] = msgspec.structs.replace(task, **changes)
        return self.store.tasks[task.id]

    async def count_pending(self) -> int:
        # One unit of work at a time here: nothing to lock.
        return sum(
            1
            for task in self.store.tasks.values()
            if task.tenant_id == self.tenant_id and task.status == TaskStatus.PENDING
        )

    async def start(self, task_id: UUID, *, at: datetime, max_attempts: int) -> Task | None:
        task = await self.get(task_id)
        if task is None or task.status in FINISHED:
            return None
        tenant = self.store.tenants.get(self.tenant_id)
        if tenant is None or tenant.status != TenantStatus.ACTIVE:
            return self._set(
                task, status=TaskStatus.CANCELLED, completed_at=at, error_message=TENANT_SUSPENDED
            )
        if task.cancel_requested:
            return self._set(task, status=TaskStatus.CANCELLED, completed_at=at)
        first = task_id not in self.store.heartbeats
        if not first and task.retry_count + 1 >= max_attempts:
            return self._set(
                task, status=TaskStatus.FAILED, completed_at=at, error_message=WORKER_LOST
            )
        self.store.heartbeats[task_id] = at
        retry_count = 0 if first else task.retry_count + 1
        return self._set(task, status=TaskStatus.PROCESSING, retry_count=retry_count)

    async def progress(self, task_id: UUID, percent: int) -> None:
        task = await self.get(task_id)
        if task is not None and percent > task.progress:
            self.store.heartbeats[task_id] = self.clock.now()
            self._set(task, progress=percent)

    async def end(self, task_id: UUID, end: AttemptEnd) -> bool:
        self.store.task_logs.append(
            TaskLog(
                id=uuid4(),
                task_id=task_id,
                attempt=end.attempt,
                operation=end.operation,
                success=end.success,
                duration_ms=end.duration_ms,
                error=end.error,
                created_at=self.clock.now(),
            )
        )
        task = await self.get(task_id)
        if task is None:
            return False
        progress = max(task.progress, 100 if end.success else end.progress)
        if end.status == TaskStatus.PENDING:
            if task.status != TaskStatus.PROCESSING:
                return False
            self._set(task, status=end.status, error_message=end.error, progress=progress)
        elif task.status in FINISHED:
            return False
        else:
            self._set(
                task,
                status=end.status,
                completed_at=end.at,
                result=end.result,
                error_message=end.error,
                output_files=list(end.output_files),
                progress=progress,
            )
        return True

    async def heartbeat(self, task_id: UUID) -> None:
        task = await self.get(task_id)
        if task is not None and task.status == TaskStatus.PROCESSING:
            self.store.heartbeats[task_id] = self.clock.now()

    async def cancel(self, task_id: UUID, at: datetime) -> Task | None:
        task = await self.get(task_id)
        if task is None or task.status in FINISHED:
            return None
        if task.status == TaskStatus.PENDING:
            return self._set(
                task, status=TaskStatus.CANCELLED, cancel_requested=True, completed_at=at
            )
        return self._set(task, cancel_requested=True)

    async def cancel_unfinished(self, at: datetime, *, error_message: str) -> int:
        touched = 0
        for task in [t for t in self.store.tasks.values() if t.tenant_id == self.tenant_id]:
            if task.status == TaskStatus.PENDING:
                self._set(
                    task,
                    status=TaskStatus.CANCELLED,
                    cancel_requested=True,
                    completed_at=at,
                    error_message=error_message,
                )
            elif task.status == TaskStatus.PROCESSING and not task.cancel_requested:
                self._set(task, cancel_requested=True)
            else:
                continue
            touched += 1
        return touched

    async def reap(
        self, task_ids: Sequence[UUID], *, stale_before: datetime, max_attempts: int, at: datetime
    ) -> list[Task]:
        reaped = []
        for task_id in task_ids:
            task = self.store.tasks.get(task_id)
            if (
                task is None
                or task.tenant_id != self.tenant_id
                or task.status != TaskStatus.PROCESSING
                or self.store.heartbeats[task.id] >= stale_before
            ):
                continue
            if task.retry_count + 1 >= max_attempts:
                changes: dict[str, Any] = {
                    "status": TaskStatus.FAILED,
                    "error_message": WORKER_LOST,
                    "completed_at": at,
                    "result": None,
                    "output_files": [],
                }
            else:
                changes = {"status": TaskStatus.PENDING, "error_message": "worker lost"}
            reaped.append(self._set(task, **changes))
        return reaped

    async def logs(self, task_id: UUID) -> list[TaskLog]:
        return [log for log in self.store.task_logs if log.task_id == task_id]

    async def stats(self) -> TaskStats:
        return TaskStats(by_status={}, by_type={}, mean_duration_ms=None, p95_duration_ms=None)


class FakeTaskSweeps:
    """Both sweeps over the tasks of every tenant in the unit of work (the per-tenant cap is
    not modelled)."""

    def __init__(self, store: FakeStore, clock: FakeClock) -> None:
        self.store = store
        self.clock = clock

    async def stranded(self, stale_before: datetime, *, per_tenant: int) -> list[tuple[UUID, UUID]]:
        return [
            (task.tenant_id, task.id)
            for task in self.store.tasks.values()
            if task.status == TaskStatus.PROCESSING
            and self.store.heartbeats[task.id] < stale_before
        ]

    async def stale_pending(self, created_before: datetime, *, per_tenant: int) -> list[Task]:
        return [
            task
            for task in self.store.tasks.values()
            if task.status == TaskStatus.PENDING and task.created_at < created_before
        ]


_AUDIT_IDS = itertools.count(1)


class FakeAuditRepository(MemoryRepository[AuditEvent]):
    def __init__(self, store: FakeStore, tenant_id: UUID, clock: FakeClock) -> None:
        super().__init__(store, tenant_id, clock, AuditEvent)

    async def add(self, **values: Any) -> AuditEvent:
        # Newer events sort after older ones, as UUIDv7 ids do (within a millisecond too).
        return await super().add(id=UUID(int=next(_AUDIT_IDS)), **values)

    async def append(self, **values: Any) -> None:
        # The working copy is what a commit keeps: as the real one, written with the commit.
        await self.add(**values)

    async def page(self, query: AuditQuery) -> list[AuditEvent]:
        wanted = {
            name: value
            for name in ("actor_id", "action", "target_type", "target_id")
            if (value := getattr(query, name)) is not None
        }
        rows = [
            row
            for row in self._mine(False, wanted)
            if (query.before is None or row.id < query.before)
            and (query.since is None or row.created_at >= query.since)
            and (query.until is None or row.created_at < query.until)
        ]
        return sorted(rows, key=lambda row: row.id, reverse=True)[: query.limit]

    async def purge(self, before: datetime, batch: int) -> int:
        aged = sorted(
            (row for row in self._mine(False, {}) if row.created_at < before),
            key=lambda row: row.created_at,
        )[:batch]
        for row in aged:
            del self.rows[row.id]
        return len(aged)


class FakeWebhookEndpointRepository(MemoryRepository[WebhookEndpoint]):
    def __init__(self, store: FakeStore, tenant_id: UUID, clock: FakeClock) -> None:
        super().__init__(store, tenant_id, clock, WebhookEndpoint)
        self.secrets: dict[UUID, str] = store.tables.setdefault(WebhookSecret, {})

    async def add(self, **values: Any) -> WebhookEndpoint:
        secret = values.pop("secret")
        defaults = {"active": True, "disabled_reason": None, "failing_since": None, "failures": 0}
        endpoint = await super().add(**(defaults | values))
        self.secrets[endpoint.id] = secret
        return endpoint

    async def secret(self, endpoint_id: UUID) -> str | None:
        return self.secrets.get(endpoint_id) if await self.get(endpoint_id) else None

    async def held(self, endpoint_id: UUID) -> WebhookEndpoint | None:
        # One unit of work at a time here: nothing to wait for.
        return await self.get(endpoint_id)

    async def attempted(self, endpoint_id: UUID, *, succeeded: bool, at: datetime) -> None:
        row = await self.get(endpoint_id)
        if row is None:
            return
        changes: dict[str, Any] = (
            {"failing_since": None, "failures": 0}
            if succeeded
            else {"failing_since": row.failing_since or at, "failures": row.failures + 1}
        )
        self.rows[endpoint_id] = msgspec.structs.replace(row, **changes)


class WebhookSecret:
    """The key of the endpoints' secrets in ``FakeStore.tables``."""


class FakeWebhookDeliveryRepository(MemoryRepository[WebhookDelivery]):
    def __init__(self, store: FakeStore, tenant_id: UUID, clock: FakeClock) -> None:
        super().__init__(store, tenant_id, clock, WebhookDelivery)
        self.endpoints = store.rows_of(WebhookEndpoint)

    async def add(self, **values: Any) -> WebhookDelivery:
        defaults = {"status": DeliveryStatus.PENDING, "attempts": 0, "log": []}
        return await super().add(**(defaults | values))

    async def publish(self, event_id: UUID, event_type: str, payload: Mapping[str, Any]) -> None:
        # Into the working copy: kept by the commit alone, as the real one.
        now = self.clock.now()
        for endpoint in list(self.endpoints.values()):
            if (
                endpoint.tenant_id == self.tenant_id
                and endpoint.active
                and event_type in endpoint.events
            ):
                await self.add(
                    endpoint_id=endpoint.id,
                    event_id=event_id,
                    event_type=event_type,
                    payload=dict(payload),
                    next_attempt_at=now,
                    tries_since=now,
                )

    async def attempted(
        self,
        delivery_id: UUID,
        attempt: DeliveryAttempt,
        *,
        status: DeliveryStatus,
        next_attempt_at: datetime,
    ) -> None:
        row = await self.get(delivery_id)
        if row is not None:
            self.rows[delivery_id] = msgspec.structs.replace(
                row, status=status, next_attempt_at=next_attempt_at, log=[*row.log, attempt]
            )

    async def page(
        self, endpoint_id: UUID, *, limit: int, offset: int
    ) -> tuple[list[WebhookDelivery], int]:
        mine = sorted(
            self._mine(False, {"endpoint_id": endpoint_id}),
            key=lambda row: row.created_at,
            reverse=True,
        )
        return mine[offset : offset + limit], len(mine)


class FakeWebhookDispatch:
    """The claim across tenants: due deliveries of active endpoints, leased by moving their
    next attempt on, as the database function does."""

    def __init__(self, store: FakeStore, clock: FakeClock) -> None:
        self.deliveries = store.rows_of(WebhookDelivery)
        self.endpoints = store.rows_of(WebhookEndpoint)
        self.clock = clock

    async def claim(self, *, lease: timedelta, batch: int, per_endpoint: int) -> list[DueDelivery]:
        now = self.clock.now()
        taken: dict[UUID, int] = {}
        claimed = []
        due = sorted(
            (
                row
                for row in self.deliveries.values()
                if row.status is DeliveryStatus.PENDING
                and row.next_attempt_at <= now
                and (endpoint := self.endpoints.get(row.endpoint_id)) is not None
                and endpoint.active
            ),
            key=lambda row: row.next_attempt_at,
        )
        for row in due:
            if len(claimed) == batch or taken.get(row.endpoint_id, 0) == per_endpoint:
                continue
            taken[row.endpoint_id] = taken.get(row.endpoint_id, 0) + 1
            self.deliveries[row.id] = msgspec.structs.replace(
                row, next_attempt_at=now + lease, attempts=row.attempts + 1
            )
            claimed.append(DueDelivery(row.tenant_id, row.endpoint_id, row.id))
        return claimed

    async def purge(self, before: datetime, *, batch: int) -> int:
        aged = [
            row.id
            for row in self.deliveries.values()
            if row.created_at < before and row.status is not DeliveryStatus.PENDING
        ][:batch]
        for delivery_id in aged:
            del self.deliveries[delivery_id]
        return len(aged)


# The fakes of ports that add methods of their own to the generic repository (or are not one);
# every other port gets a MemoryRepository of its entity.
FAKES: dict[Any, Callable[[FakeStore, UUID, FakeClock], Any]] = {
    AuditRepository: FakeAuditRepository,
    UserRepository: FakeUserRepository,
    RefreshTokenRepository: FakeRefreshTokenRepository,
    ApiKeyRepository: FakeApiKeyRepository,
    DocumentRepository: FakeDocumentRepository,
    FileRepository: FakeFileRepository,
    TaskRepository: FakeTaskRepository,
    WebhookEndpointRepository: FakeWebhookEndpointRepository,
    WebhookDeliveryRepository: FakeWebhookDeliveryRepository,
}


class FakeJobQueue:
    def __init__(self) -> None:
        self.enqueued: list[UUID] = []
        self.running_limits: list[int | None] = []

    async def enqueue(
        self, task: Task, *, request_id: str | None, running_limit: int | None = None
    ) -> None:
        self.enqueued.append(task.id)
        self.running_limits.append(running_limit)


class FakeStorage:
    """Objects in a dict; a failed put leaves nothing, as the port promises."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> None:
        self.objects[key] = b"".join([chunk async for chunk in chunks])

    async def get(
        self, key: str, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        data = self.objects[key]
        yield data[start : None if end is None else end + 1]

    async def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    async def discard_unfinished(self, before: datetime) -> int:
        # A put here is whole or absent: nothing is ever left unfinished.
        return 0

    async def ping(self) -> None:
        return None


def entity_of(port: Any) -> type[Any]:
    """``Project`` for ``ProjectRepository(Repository[Project], Protocol)``."""
    for base in getattr(port, "__orig_bases__", ()):
        if get_origin(base) is Repository:
            return cast("type[Any]", get_args(base)[0])
    raise LookupError(f"{port!r} is not a Repository[...] and has no fake of its own")


class FakeUnitOfWork:
    def __init__(self, store: FakeStore | None = None, clock: FakeClock | None = None) -> None:
        self.committed = store or FakeStore()
        self.clock = clock or FakeClock()
        self.commits = 0
        self.pending: tuple[UUID, Check] | None = None
        self.later: tuple[UUID, Check] | None = None
        self._begin()

    def _begin(self) -> None:
        self.working = copy.deepcopy(self.committed)
        self.tenants = FakeTenantRepository(self.working, self.clock)

    def repository(self, port: Callable[..., R], tenant_id: UUID) -> R:
        fake = FAKES.get(port)
        if fake is not None:
            built = fake(self.working, tenant_id, self.clock)
            if hasattr(built, "commit_alone"):
                built.commit_alone = self.commit_alone
            if hasattr(built, "check_first"):
                built.check_first = self.check_first
            if hasattr(built, "check_later"):
                built.check_later = self.check_later
            return cast("R", built)
        return cast("R", MemoryRepository(self.working, tenant_id, self.clock, entity_of(port)))

    def platform(self, port: Callable[..., R]) -> R:
        if port is TaskSweeps:
            return cast("R", FakeTaskSweeps(self.working, self.clock))
        if port is WebhookDispatch:
            return cast("R", FakeWebhookDispatch(self.working, self.clock))
        raise LookupError(f"no fake serves {port!r}")

    def check_first(self, tenant_id: UUID, holds: Check) -> None:
        self.pending = (tenant_id, holds)

    def check_later(self, tenant_id: UUID, holds: Check) -> None:
        self.later = (tenant_id, holds)

    async def later_check_holds(self) -> bool | None:
        """What the check kept for a later write answers now; None when none was kept."""
        if self.later is None:
            return None
        tenant_id, holds = self.later
        return await holds(FakeUserRepository(self.committed, tenant_id, self.clock))

    async def __aenter__(self) -> Self:
        self._begin()
        if self.pending is not None:
            # As the database's: the check begins the next transaction, which it may refuse.
            (tenant_id, holds), self.pending = self.pending, None
            if not await holds(FakeUserRepository(self.working, tenant_id, self.clock)):
                raise Unauthenticated(INVALID_CREDENTIALS)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.rollback()

    async def commit(self) -> None:
        self.committed = copy.deepcopy(self.working)
        self.commits += 1

    async def rollback(self) -> None:
        self._begin()

    async def commit_alone(self) -> None:
        """A statement run alone commits what it wrote at once; the unit of work committed
        nothing."""
        self.committed = copy.deepcopy(self.working)


class FakePasswordHasher:
    """Reversible on purpose: the tests read what was hashed. Counts every verification."""

    def __init__(self, version: str = "v1") -> None:
        self.version = version
        self.verifications: list[str | None] = []

    async def hash(self, password: str) -> str:
        return f"{self.version}:{password}"

    async def verify(self, password_hash: str | None, password: str) -> bool:
        self.verifications.append(password_hash)
        return password_hash is not None and password_hash.split(":", 1)[1] == password

    def needs_rehash(self, password_hash: str) -> bool:
        return not password_hash.startswith(f"{self.version}:")


class FakeAccessTokens:
    ttl_seconds = 900

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.issued: dict[str, AccessClaims] = {}

    async def issue(
        self, *, user_id: UUID, tenant_id: UUID, roles: tuple[Role, ...], session_id: UUID
    ) -> str:
        token = f"access-{len(self.issued)}"
        self.issued[token] = AccessClaims(
            user_id=user_id,
            tenant_id=tenant_id,
            roles=roles,
            token_id=token,
            expires_at=self.clock.now() + timedelta(seconds=self.ttl_seconds),
            session_id=session_id,
        )
        return token

    async def verify(self, token: str) -> AccessClaims:
        claims = self.issued.get(token)
        if claims is None or claims.expires_at <= self.clock.now():
            raise Unauthenticated("Invalid or expired credentials.")
        return claims


class FakeSecretStore:
    """Versioned secrets in a dict, with the check-and-set rule of Vault's KV v2."""

    def __init__(self) -> None:
        self.secrets: dict[str, Secret] = {}
        self.writes = 0

    async def read(self, name: str, *, fresh: bool = False) -> Secret:
        if name not in self.secrets:
            raise SecretNotFound(f"No secret {name!r}.")
        return self.secrets[name]

    async def write(self, name: str, data: Mapping[str, Any], *, cas: int) -> int:
        current = self.secrets.get(name)
        if (current.version if current else 0) != cas:
            raise StaleVersion("The secret changed since it was read.")
        self.writes += 1
        self.secrets[name] = Secret(data=dict(data), version=cas + 1)
        return cas + 1

    async def ping(self) -> None:
        return None

    def describe(self, name: str) -> str:
        return f"the fake store's {name}"


class FakeRateLimiter:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.windows: dict[str, int] = {}

    async def hit(self, *attempts: Attempt) -> int | None:
        waits = []
        for key, limit, window_seconds in (msgspec.structs.astuple(a) for a in attempts):
            self.counts[key] = self.counts.get(key, 0) + 1
            self.windows.setdefault(key, window_seconds)
            if self.counts[key] > limit:
                waits.append(self.windows[key])
        return max(waits, default=None)

    async def retry_after(self, key: str, *, limit: int) -> int | None:
        return self.windows[key] if self.counts.get(key, 0) > limit else None


@dataclass
class World:
    """Everything a use case test needs, wired like bootstrap wires the real adapters."""

    uow: FakeUnitOfWork = field(default_factory=FakeUnitOfWork)
    passwords: FakePasswordHasher = field(default_factory=FakePasswordHasher)
    limiter: FakeRateLimiter = field(default_factory=FakeRateLimiter)
    policy: AuthPolicy = field(default_factory=AuthPolicy)

    def __post_init__(self) -> None:
        self.clock = self.uow.clock
        self.tokens = FakeAccessTokens(self.clock)

    def events(self, tenant_id: UUID) -> list[AuditEvent]:
        """The committed audit events of a tenant, oldest first."""
        rows = self.uow.committed.rows_of(AuditEvent).values()
        return sorted((e for e in rows if e.tenant_id == tenant_id), key=lambda e: e.id)

    @property
    def identity(self) -> Identity:
        return Identity(
            self.uow,
            passwords=self.passwords,
            tokens=self.tokens,
            limiter=self.limiter,
            clock=self.clock,
            policy=self.policy,
        )

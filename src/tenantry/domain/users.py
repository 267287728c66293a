"""Users: people who belong to exactly one tenant, with roles in it."""

from __future__ import annotations

import enum
import re
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import msgspec

from tenantry.domain.errors import Invalid

USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$")
# Deliberately loose: one @, a dot in the domain, no spaces. Deliverability is the mail's job.
EMAIL_PATTERN = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
EMAIL_MAX_LENGTH = 254
PASSWORD_MIN_LENGTH = 12
PASSWORD_MAX_LENGTH = 256


class Role(enum.StrEnum):
    """What a user may do in their tenant: owner and admin manage it, member works in it;
    superuser is the platform's operator."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    # The platform operator; lives in the platform tenant and spans all tenants.
    SUPERUSER = "superuser"


TENANT_ROLES = frozenset({Role.OWNER, Role.ADMIN, Role.MEMBER})
MANAGERS = frozenset({Role.OWNER, Role.ADMIN})


class User(msgspec.Struct, kw_only=True, frozen=True):
    id: UUID
    tenant_id: UUID
    username: str
    email: str
    roles: tuple[Role, ...]
    settings: dict[str, Any]
    is_active: bool
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None = None


class NewUser(msgspec.Struct, kw_only=True, frozen=True):
    """A validated user about to be stored, its password already hashed."""

    tenant_id: UUID
    username: str
    email: str
    password_hash: str
    roles: tuple[Role, ...]


def normalise_email(email: str) -> str:
    return email.strip().lower()


def validate_identity(username: str, email: str) -> dict[str, str]:
    """Field problems with a username and email, keyed by field name."""
    problems: dict[str, str] = {}
    if not USERNAME_PATTERN.match(username):
        problems["username"] = (
            "must be 3 to 64 characters of letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    if len(email) > EMAIL_MAX_LENGTH or not EMAIL_PATTERN.match(email):
        problems["email"] = "must be an email address"
    return problems


def password_problem(password: str, *, username: str, email: str) -> str | None:
    """What is wrong with a password under the policy, or None."""
    if len(password) < PASSWORD_MIN_LENGTH:
        return f"must be at least {PASSWORD_MIN_LENGTH} characters"
    if len(password) > PASSWORD_MAX_LENGTH:
        return f"must be at most {PASSWORD_MAX_LENGTH} characters"
    classes = [
        any(c.islower() for c in password),
        any(c.isupper() for c in password),
        any(c.isdigit() for c in password),
        any(not c.isalnum() for c in password),
    ]
    if sum(classes) < 2:
        return "must mix at least two of lowercase, uppercase, digits and symbols"
    lowered = password.lower()
    local_part = email.split("@", 1)[0].lower()
    for personal in (username.lower(), local_part):
        if len(personal) >= 3 and personal in lowered:
            return "must not contain the username or email"
    return None


def validate_new_user(username: str, email: str, password: str) -> tuple[str, str]:
    """Check a sign-up; return the username and normalised email or raise ``Invalid``."""
    username = username.strip()
    email = normalise_email(email)
    problems = validate_identity(username, email)
    if problem := password_problem(password, username=username, email=email):
        problems["password"] = problem
    if problems:
        raise Invalid("The user is not valid.", fields=problems)
    return username, email


def validate_roles(roles: list[str]) -> tuple[Role, ...]:
    try:
        chosen = tuple(dict.fromkeys(Role(role) for role in roles))
    except ValueError:
        raise Invalid("Unknown role.", fields={"roles": "must be owner, admin or member"}) from None
    if not chosen or any(role not in TENANT_ROLES for role in chosen):
        raise Invalid("Unknown role.", fields={"roles": "must be owner, admin or member"})
    return chosen


class UserRepository(Protocol):
    """Users of one tenant; built for that tenant and unable to see others."""

    async def add(self, user: NewUser) -> User:
        """Store a new user; raise ``Conflict`` naming the taken email or username."""
        ...

    async def get(self, user_id: UUID) -> User | None: ...

    async def find_by_login(self, login: str, *, alone: bool = False) -> tuple[User, str] | None:
        """The user whose email or username is ``login``, with their password hash. ``alone``: in a transaction of its own, one
        statement, ended before this returns, whatever the unit of work does (it begins none)."""
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
        self,
        user_id: UUID,
        *,
        session_id: UUID | None = None,
        claimed: tuple[Role, ...] | None = None,
        held: bool = False,
    ) -> tuple[Role, ...] | None:
        """The user's roles while both the user and the tenant are active and, when a session
        (refresh-token family) is named, it was not revoked; else None. ``claimed``: the roles
        the caller was told (an access token's); an answer equal to them, as a set, may come
        back as given, confirmed rather than read. ``held``: read, and the user kept from being
        deleted until the transaction ends, as a row naming the user would keep them; for a use
        case that writes such a row after changing another row the user's delete removes (its
        delete takes the user first)."""
        ...

    def confirm_roles_first(
        self, user_id: UUID, *, session_id: UUID | None, claimed: tuple[Role, ...]
    ) -> None:
        """Have the unit of work's next transaction begin by confirming what ``active_roles``
        would: ``claimed`` are the user's roles (as a set), the user and the tenant active, the
        session not revoked. Otherwise that transaction raises Unauthenticated before any
        statement of its own. Nothing is read now: for a request whose body comes after its
        credentials, when no connection may wait on the client."""
        ...

    async def lock_active_owners(self) -> set[UUID]:
        """The ids of the tenant's active owners, read after locking the tenant's owners until
        the transaction ends: concurrent callers take turns, each reading what the last one
        committed."""
        ...

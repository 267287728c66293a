"""Tenants: the organisations that own all other data."""

from __future__ import annotations

import enum
import re
from datetime import datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

import msgspec

from tenantry.domain.errors import Invalid

SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])$")
NAME_MAX_LENGTH = 200
# Slugs that would read as platform paths or impersonate the operator.
RESERVED_SLUGS = frozenset(
    {
        "admin",
        "api",
        "app",
        "auth",
        "docs",
        "health",
        "metrics",
        "platform",
        "ready",
        "root",
        "system",
        "www",
    }
)

PLATFORM_SLUG = "platform"
PLATFORM_SETTING = "platform"


class TenantStatus(enum.StrEnum):
    """A suspended tenant's users, tokens and API keys are refused."""

    ACTIVE = "active"
    SUSPENDED = "suspended"


class Tenant(msgspec.Struct, kw_only=True, frozen=True):
    id: UUID
    name: str
    slug: str
    status: TenantStatus
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class NewTenant(msgspec.Struct, kw_only=True, frozen=True):
    """A tenant about to be stored: validated, not yet given an id."""

    name: str
    slug: str
    settings: dict[str, Any] = msgspec.field(default_factory=dict)

    @classmethod
    def create(cls, *, name: str, slug: str, platform: bool = False) -> NewTenant:
        """Validate a new tenant; only the platform's own tenant may take a reserved slug."""
        name = " ".join(name.split())
        slug = slug.strip().lower()
        problems: dict[str, str] = {}
        if not name:
            problems["name"] = "must not be blank"
        elif len(name) > NAME_MAX_LENGTH:
            problems["name"] = f"must be at most {NAME_MAX_LENGTH} characters"
        if not SLUG_PATTERN.match(slug):
            problems["slug"] = (
                "must be 3 to 63 characters of lowercase letters, digits and hyphens, "
                "starting and ending with a letter or digit"
            )
        elif slug in RESERVED_SLUGS and not platform:
            problems["slug"] = "is reserved"
        if problems:
            raise Invalid("The tenant is not valid.", fields=problems)
        return cls(name=name, slug=slug, settings={PLATFORM_SETTING: True} if platform else {})


class TenantRepository(Protocol):
    """Tenants are platform data: this repository spans every tenant on purpose."""

    async def add(self, tenant: NewTenant) -> Tenant:
        """Store a new tenant; raise ``Conflict`` when its slug is taken."""
        ...

    async def get(self, tenant_id: UUID) -> Tenant | None: ...

    async def get_by_slug(self, slug: str, *, alone: bool = False) -> Tenant | None:
        """The tenant of ``slug``. ``alone``: in a transaction of its own, one
        statement, ended before this returns, whatever the unit of work does (it begins none)."""
        ...

    async def list(self, *, limit: int, offset: int) -> tuple[list[Tenant], int]: ...

    async def with_setting(self, name: str) -> dict[UUID, Any]:
        """The value of the setting ``name`` of every tenant that has it."""
        ...

    async def update(
        self,
        tenant_id: UUID,
        *,
        status: TenantStatus | None = None,
        settings: dict[str, Any] | None = None,
    ) -> Tenant | None: ...


SettingT = TypeVar("SettingT", bound=msgspec.Struct)


def setting_value(value: object, kind: type[SettingT], name: str) -> SettingT:
    """A tenant setting's value as ``kind`` (its defaults when null); Invalid naming the
    setting (``settings.<name>``) when it does not fit."""
    if value is None:
        return kind()
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as error:
        raise Invalid(f"Invalid {name} setting.", fields={f"settings.{name}": str(error)}) from None

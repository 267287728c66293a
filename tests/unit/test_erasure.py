"""The erasure's confirmation rule, without I/O (the use cases run on the real engines in
tests/integration/test_erasure.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from tenantry.domain.erasure import check_erasable, tenant_prefix
from tenantry.domain.errors import Forbidden, Invalid
from tenantry.domain.tenants import PLATFORM_SLUG, Tenant, TenantStatus


def tenant(slug: str) -> Tenant:
    now = datetime.now(UTC)
    return Tenant(
        id=uuid.uuid4(),
        name=slug.title(),
        slug=slug,
        status=TenantStatus.ACTIVE,
        settings={},
        created_at=now,
        updated_at=now,
    )


@pytest.mark.parametrize("confirm", ["acme", " ACME ", "Acme"])
def test_the_slug_typed_again_confirms(confirm: str) -> None:
    check_erasable(tenant("acme"), confirm)


@pytest.mark.parametrize("confirm", [None, "", "acm", "globex", "acme-"])
def test_anything_else_is_refused_naming_confirm(confirm: str | None) -> None:
    with pytest.raises(Invalid) as refused:
        check_erasable(tenant("acme"), confirm)
    assert set(refused.value.fields) == {"confirm"}


def test_the_platform_tenant_is_never_erased() -> None:
    with pytest.raises(Forbidden):
        check_erasable(tenant(PLATFORM_SLUG), PLATFORM_SLUG)


def test_the_prefix_holds_the_tenants_objects_only() -> None:
    tenant_id = uuid.uuid4()
    assert tenant_prefix(tenant_id) == f"tenants/{tenant_id}/"

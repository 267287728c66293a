from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenantry.application.tenants import CreateTenant
from tenantry.domain.errors import Conflict, Invalid
from tenantry.domain.tenants import RESERVED_SLUGS, SLUG_PATTERN, NewTenant

from .fakes import FakeUnitOfWork

valid_slugs = st.from_regex(r"\A[a-z0-9][a-z0-9-]{1,61}[a-z0-9]\Z").filter(
    lambda slug: slug not in RESERVED_SLUGS
)


@given(valid_slugs)
def test_every_well_formed_slug_is_accepted(slug: str) -> None:
    assert NewTenant.create(name="Acme", slug=slug).slug == slug


@given(st.text(max_size=80))
def test_a_slug_is_accepted_only_when_it_matches_the_rule(slug: str) -> None:
    normalised = slug.strip().lower()
    if SLUG_PATTERN.match(normalised) and normalised not in RESERVED_SLUGS:
        assert NewTenant.create(name="Acme", slug=slug).slug == normalised
    else:
        with pytest.raises(Invalid) as error:
            NewTenant.create(name="Acme", slug=slug)
        assert "slug" in error.value.fields


@pytest.mark.parametrize("slug", ["ab", "-acme", "acme-", "Ac me", "a" * 64, "admin", "ünï"])
def test_bad_slugs_are_invalid(slug: str) -> None:
    with pytest.raises(Invalid) as error:
        NewTenant.create(name="Acme", slug=slug)
    assert set(error.value.fields) == {"slug"}


def test_names_are_trimmed_and_must_not_be_blank() -> None:
    assert NewTenant.create(name="  Acme   Corp ", slug="acme").name == "Acme Corp"
    with pytest.raises(Invalid) as error:
        NewTenant.create(name="   ", slug="acme")
    assert set(error.value.fields) == {"name"}


async def test_create_tenant_commits_once() -> None:
    uow = FakeUnitOfWork()
    tenant = await CreateTenant(uow)(name="Acme", slug="ACME")
    assert tenant.slug == "acme"
    assert uow.commits == 1
    assert list(uow.committed) == [tenant.id]


async def test_a_taken_slug_is_a_conflict_and_writes_nothing() -> None:
    uow = FakeUnitOfWork()
    create = CreateTenant(uow)
    await create(name="Acme", slug="acme")
    with pytest.raises(Conflict) as error:
        await create(name="Other", slug="acme")
    assert error.value.fields == {"slug": "is taken"}
    assert uow.commits == 1
    assert len(uow.committed) == 1


async def test_invalid_input_never_opens_the_unit_of_work() -> None:
    uow = FakeUnitOfWork()
    with pytest.raises(Invalid):
        await CreateTenant(uow)(name="", slug="x")
    assert uow.commits == 0

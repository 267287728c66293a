from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenantry.application.auth import AuthPolicy
from tenantry.application.tenants import CreateSuperuser, CreateTenant, OwnerInput
from tenantry.domain.errors import Conflict, Invalid, RateLimited
from tenantry.domain.tenants import RESERVED_SLUGS, SLUG_PATTERN, NewTenant
from tenantry.domain.users import Role

from .fakes import World

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


OWNER = OwnerInput(username="olive", email="Olive@Acme.example", password="correct horse 9 staple")


async def test_create_tenant_makes_tenant_and_owner_in_one_commit() -> None:
    world = World()
    tenant, owner = await CreateTenant(world.identity)(
        name="Acme", slug="ACME", owner=OWNER, client="10.0.0.1"
    )
    assert tenant.slug == "acme"
    assert owner.tenant_id == tenant.id
    assert owner.roles == (Role.OWNER,)
    assert owner.email == "olive@acme.example"
    assert world.uow.commits == 1
    assert world.uow.committed.password_hashes[owner.id] == "v1:correct horse 9 staple"


async def test_a_taken_slug_is_a_conflict_and_writes_nothing() -> None:
    world = World()
    create = CreateTenant(world.identity)
    await create(name="Acme", slug="acme", owner=OWNER, client=None)
    with pytest.raises(Conflict) as error:
        await create(name="Other", slug="acme", owner=OWNER, client=None)
    assert error.value.fields == {"slug": "is taken"}
    assert world.uow.commits == 1
    assert len(world.uow.committed.tenants) == 1


async def test_a_weak_owner_password_creates_no_tenant() -> None:
    world = World()
    weak = OwnerInput(username="olive", email="olive@acme.example", password="olive-password-1")
    with pytest.raises(Invalid) as error:
        await CreateTenant(world.identity)(name="Acme", slug="acme", owner=weak, client=None)
    assert set(error.value.fields) == {"password"}
    assert world.uow.committed.tenants == {}


async def test_invalid_tenant_never_opens_the_unit_of_work() -> None:
    world = World()
    with pytest.raises(Invalid):
        await CreateTenant(world.identity)(name="", slug="x", owner=OWNER, client=None)
    assert world.uow.commits == 0


async def test_tenant_sign_up_is_rate_limited_per_address() -> None:
    world = World(policy=AuthPolicy(register_attempts_per_address=2))
    create = CreateTenant(world.identity)
    for slug in ("one", "two"):
        await create(name="T", slug=slug, owner=OWNER, client="10.0.0.1")
    with pytest.raises(RateLimited) as error:
        await create(name="T", slug="three", owner=OWNER, client="10.0.0.1")
    assert error.value.retry_after > 0
    await create(name="T", slug="four", owner=OWNER, client=None)


async def test_superuser_lives_in_the_platform_tenant() -> None:
    world = World()
    first = await CreateSuperuser(world.identity)(
        username="root", email="root@platform.example", password="correct horse 9 staple"
    )
    second = await CreateSuperuser(world.identity)(
        username="ops", email="ops@platform.example", password="correct horse 9 staple"
    )
    platform = world.uow.committed.tenants[first.tenant_id]
    assert platform.slug == "platform"
    assert second.tenant_id == platform.id
    assert Role.SUPERUSER in first.roles

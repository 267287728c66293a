from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenantry.application.auth import AuthPolicy
from tenantry.application.tenants import CreateSuperuser, CreateTenant, OwnerInput, UpdateTenant
from tenantry.domain.audit import AuditEvent
from tenantry.domain.auth import Actor
from tenantry.domain.errors import Conflict, Forbidden, Invalid, RateLimited
from tenantry.domain.tasks import TaskRepository, TaskStatus
from tenantry.domain.tenants import RESERVED_SLUGS, NewTenant, TenantStatus
from tenantry.domain.users import Role

from .fakes import World

LOWER_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


def well_formed(slug: str) -> bool:
    """The slug rule as the API documents it, spelt out without a regex: 3 to 63 ASCII
    lowercase letters, digits and hyphens, starting and ending with a letter or digit."""
    return (
        3 <= len(slug) <= 63
        and set(slug) <= LOWER_ALNUM | {"-"}
        and slug[0] in LOWER_ALNUM
        and slug[-1] in LOWER_ALNUM
    )


# Mostly the rule's own characters, so that many candidates pass, with the ones it must refuse
# mixed in: uppercase (lowered first), white space (stripped), other separators, and non-ASCII
# letters and digits that a Unicode-aware pattern (\w, \d, isalnum) would let through.
near_slugs = st.text(alphabet="abz09-AZ _.\n\u00fc\u00e9\u0661\uff41", max_size=70)


@given(near_slugs | st.text(max_size=80))
def test_a_slug_is_accepted_exactly_when_it_is_well_formed(slug: str) -> None:
    normalised = slug.strip().lower()
    if well_formed(normalised) and normalised not in RESERVED_SLUGS:
        assert NewTenant.create(name="Acme", slug=slug).slug == normalised
    else:
        with pytest.raises(Invalid) as error:
            NewTenant.create(name="Acme", slug=slug)
        assert set(error.value.fields) == {"slug"}


@pytest.mark.parametrize(
    ("slug", "stored"),
    [
        ("abc", "abc"),
        ("a" * 63, "a" * 63),
        ("a-b", "a-b"),
        ("a--b", "a--b"),
        ("x" + "-" * 61 + "y", "x" + "-" * 61 + "y"),
        ("123", "123"),
        ("0-a", "0-a"),
        ("acme-2", "acme-2"),
        ("ACME", "acme"),
        ("Acme-Corp", "acme-corp"),
        ("  acme\n", "acme"),
    ],
)
def test_good_slugs_are_accepted_lowercased_and_trimmed(slug: str, stored: str) -> None:
    assert NewTenant.create(name="Acme", slug=slug).slug == stored


@pytest.mark.parametrize(
    "slug",
    [
        "",
        "ab",
        "   ab   ",
        "a" * 64,
        "-acme",
        "acme-",
        "-ab-",
        "---",
        "a_b",
        "a.b",
        "Ac me",
        "ac\nme",
        "a\x00b",
        "ünï",
        "café",
        "\u0661\u0662\u0663",  # Arabic-Indic digits
        "\uff41\uff42\uff43",  # fullwidth letters
    ],
)
def test_bad_slugs_are_invalid(slug: str) -> None:
    with pytest.raises(Invalid) as error:
        NewTenant.create(name="Acme", slug=slug)
    assert set(error.value.fields) == {"slug"}


@pytest.mark.parametrize("slug", ["admin", "Platform", "www"])
def test_reserved_slugs_are_refused_except_for_the_platform(slug: str) -> None:
    with pytest.raises(Invalid) as error:
        NewTenant.create(name="Acme", slug=slug)
    assert error.value.fields == {"slug": "is reserved"}
    assert NewTenant.create(name="Acme", slug=slug, platform=True).slug == slug.lower()


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


async def test_suspension_cancels_queued_tasks_at_once_and_asks_running_ones_to_stop() -> None:
    world = World()
    root = await CreateSuperuser(world.identity)(
        username="root", email="root@platform.example", password="correct horse 9 staple"
    )
    superuser = Actor(user_id=root.id, tenant_id=root.tenant_id, roles=root.roles)
    create = CreateTenant(world.identity)
    acme, _ = await create(name="Acme", slug="acme", owner=OWNER, client=None)
    globex, _ = await create(name="Globex", slug="globex", owner=OWNER, client=None)
    async with world.uow:
        submitted = {}
        for name, tenant_id in (("queued", acme.id), ("running", acme.id), ("other", globex.id)):
            task = await world.uow.repository(TaskRepository, tenant_id).add(
                type="noop", config={}, input_files=[], created_by=None
            )
            submitted[name] = task.id
        await world.uow.repository(TaskRepository, acme.id).start(
            submitted["running"], at=world.clock.now(), max_attempts=3
        )
        await world.uow.commit()

    update = UpdateTenant(world.uow, world.clock)
    await update(superuser, acme.id, status=TenantStatus.SUSPENDED)

    tasks = world.uow.committed.tasks
    assert {
        name: (tasks[i].status, tasks[i].cancel_requested) for name, i in submitted.items()
    } == {
        "queued": (TaskStatus.CANCELLED, True),
        "running": (TaskStatus.PROCESSING, True),
        "other": (TaskStatus.PENDING, False),
    }
    assert tasks[submitted["queued"]].error_message == "The tenant was suspended."
    # Suspending again, or re-activating, touches no task.
    before = dict(tasks)
    await update(superuser, acme.id, status=TenantStatus.SUSPENDED)
    await update(superuser, acme.id, status=TenantStatus.ACTIVE)
    assert world.uow.committed.tasks == before


async def test_a_sign_up_records_the_tenant_and_its_owner_as_the_owners_doing() -> None:
    world = World()
    tenant, owner = await CreateTenant(world.identity)(
        name="Acme", slug="acme", owner=OWNER, client="10.0.0.1"
    )
    events = world.events(tenant.id)
    assert [(e.action, e.actor_type, e.actor_id, e.target_id) for e in events] == [
        ("tenant.created", "user", owner.id, tenant.id),
        ("user.created", "user", owner.id, owner.id),
    ]
    assert events[0].changes == {"after": {"name": "Acme", "slug": "acme", "status": "active"}}
    assert events[1].changes["after"]["roles"] == ("owner",)
    assert "correct horse" not in repr(events)
    # The CLI's operator is the system.
    cli, _ = await CreateTenant(world.identity)(name="Cli", slug="cli", owner=OWNER, client=None)
    assert {(e.actor_type, e.actor_id) for e in world.events(cli.id)} == {("system", None)}


async def test_a_taken_slug_records_nothing() -> None:
    world = World()
    create = CreateTenant(world.identity)
    await create(name="Acme", slug="acme", owner=OWNER, client=None)
    with pytest.raises(Conflict):
        await create(name="Other", slug="acme", owner=OWNER, client=None)
    assert len(world.uow.committed.rows_of(AuditEvent)) == 2


async def test_a_superuser_is_created_by_the_system_in_the_platform_trail() -> None:
    world = World()
    root = await CreateSuperuser(world.identity)(
        username="root", email="root@platform.example", password="correct horse 9 staple"
    )
    ops = await CreateSuperuser(world.identity)(
        username="ops", email="ops@platform.example", password="correct horse 9 staple"
    )
    events = world.events(root.tenant_id)
    assert [(e.action, e.actor_type, e.target_id) for e in events] == [
        ("tenant.created", "system", root.tenant_id),
        ("user.created", "system", root.id),
        ("user.created", "system", ops.id),
    ]
    assert "correct horse" not in repr(events)


async def test_a_superusers_change_of_a_tenant_is_in_that_tenants_trail() -> None:
    world = World()
    root = await CreateSuperuser(world.identity)(
        username="root", email="root@platform.example", password="correct horse 9 staple"
    )
    superuser = Actor(user_id=root.id, tenant_id=root.tenant_id, roles=root.roles)
    acme, _ = await CreateTenant(world.identity)(name="Acme", slug="acme", owner=OWNER, client=None)
    platform_events = len(world.events(root.tenant_id))
    update = UpdateTenant(world.uow, world.clock)
    await update(
        superuser,
        acme.id,
        status=TenantStatus.SUSPENDED,
        settings={"allow_self_signup": True, "webhook_secret": "s3cret"},
    )
    with pytest.raises(Forbidden):
        await update(superuser, root.tenant_id, status=TenantStatus.SUSPENDED)

    event = world.events(acme.id)[-1]
    assert (event.action, event.actor_type, event.actor_id, event.target_id) == (
        "tenant.updated",
        "superuser",
        root.id,
        acme.id,
    )
    assert event.changes == {
        "before": {"status": "active"},
        "after": {"status": "suspended"},
        "changed": ["settings.allow_self_signup", "settings.webhook_secret"],
    }
    assert "s3cret" not in repr(world.events(acme.id))
    # Nothing in the superuser's own trail, and nothing for the refused suspension.
    assert len(world.events(root.tenant_id)) == platform_events

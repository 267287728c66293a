from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenantry.application.tenants import CreateTenant, OwnerInput
from tenantry.application.users import CreateUser, DeleteUser, GetUser, ListUsers, UpdateUser
from tenantry.domain.auth import Actor
from tenantry.domain.errors import Conflict, Forbidden, Invalid, NotFound
from tenantry.domain.users import PASSWORD_MIN_LENGTH, Role, password_problem, validate_new_user

from .fakes import World

PASSWORD = "correct horse 9 staple"


def test_password_policy_says_what_is_wrong() -> None:
    assert password_problem("short1A", username="u", email="e@x.io") == (
        f"must be at least {PASSWORD_MIN_LENGTH} characters"
    )
    assert "mix" in str(password_problem("alllowercaseletters", username="u", email="e@x.io"))
    assert "username" in str(
        password_problem("Olive-the-great-1", username="olive", email="e@x.io")
    )
    assert "email" in str(
        password_problem("X-ceo.person-1", username="bob", email="ceo.person@x.io")
    )
    assert password_problem(PASSWORD, username="olive", email="olive@x.io") is None


@given(st.text(min_size=PASSWORD_MIN_LENGTH, max_size=40))
def test_a_password_that_passes_the_policy_mixes_classes(password: str) -> None:
    if password_problem(password, username="someone", email="someone@x.io") is None:
        kinds = [
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        ]
        assert sum(kinds) >= 2


def test_new_user_reports_every_bad_field_at_once() -> None:
    with pytest.raises(Invalid) as error:
        validate_new_user("x", "nope", "short")
    assert set(error.value.fields) == {"username", "email", "password"}


async def tenant_with_owner(world: World, slug: str = "acme") -> Actor:
    tenant, owner = await CreateTenant(world.identity)(
        name=slug,
        slug=slug,
        owner=OwnerInput(username="olive", email=f"olive@{slug}.example", password=PASSWORD),
        client=None,
    )
    return Actor(user_id=owner.id, tenant_id=tenant.id, roles=owner.roles)


async def add(world: World, actor: Actor, name: str, roles: list[str]) -> Actor:
    user = await CreateUser(world.identity)(
        actor, username=name, email=f"{name}@x.example", password=PASSWORD, roles=roles
    )
    return Actor(user_id=user.id, tenant_id=user.tenant_id, roles=user.roles)


async def test_owner_adds_users_and_duplicates_conflict() -> None:
    world = World()
    owner = await tenant_with_owner(world)
    member = await add(world, owner, "mia", ["member"])
    assert member.roles == (Role.MEMBER,)
    with pytest.raises(Conflict):
        await add(world, owner, "MIA", ["member"])
    users, total = await ListUsers(world.uow)(owner, limit=10, offset=0)
    assert total == 2
    assert {u.username for u in users} == {"olive", "mia"}


async def test_members_may_read_but_not_write() -> None:
    world = World()
    owner = await tenant_with_owner(world)
    member = await add(world, owner, "mia", ["member"])
    assert (await GetUser(world.uow)(member, owner.user_id)).username == "olive"
    with pytest.raises(Forbidden):
        await add(world, member, "max", ["member"])
    with pytest.raises(Forbidden):
        await DeleteUser(world.uow)(member, owner.user_id)
    with pytest.raises(Forbidden):
        await UpdateUser(world.uow)(member, member.user_id, roles=["admin"])


async def test_admins_cannot_touch_owners_or_make_owners() -> None:
    world = World()
    owner = await tenant_with_owner(world)
    admin = await add(world, owner, "adam", ["admin"])
    with pytest.raises(Forbidden):
        await add(world, admin, "otto", ["owner"])
    with pytest.raises(Forbidden):
        await UpdateUser(world.uow)(admin, owner.user_id, is_active=False)
    with pytest.raises(Forbidden):
        await DeleteUser(world.uow)(admin, owner.user_id)


async def test_no_one_deactivates_or_deletes_themselves() -> None:
    world = World()
    owner = await tenant_with_owner(world)
    await add(world, owner, "otto", ["owner"])
    with pytest.raises(Forbidden):
        await UpdateUser(world.uow)(owner, owner.user_id, is_active=False)
    with pytest.raises(Forbidden):
        await DeleteUser(world.uow)(owner, owner.user_id)
    changed = await UpdateUser(world.uow)(owner, owner.user_id, email="NEW@acme.example")
    assert changed.email == "new@acme.example"


async def test_the_last_active_owner_stays_whatever_takes_them_away() -> None:
    world = World()
    owner = await tenant_with_owner(world)
    otto = await add(world, owner, "otto", ["owner"])
    # An owner acting on a stale credential (demoted meanwhile) is held to the rule as well.
    stale_otto = Actor(user_id=otto.user_id, tenant_id=otto.tenant_id, roles=(Role.OWNER,))
    await UpdateUser(world.uow)(owner, otto.user_id, is_active=False)
    attempts = [
        UpdateUser(world.uow)(stale_otto, owner.user_id, roles=["admin"]),
        UpdateUser(world.uow)(stale_otto, owner.user_id, is_active=False),
        DeleteUser(world.uow)(stale_otto, owner.user_id),
        UpdateUser(world.uow)(owner, owner.user_id, roles=["member"]),
        DeleteUser(world.uow)(owner, owner.user_id),
    ]
    for attempt in attempts:
        with pytest.raises(Conflict) as error:
            await attempt
        assert error.value.detail == "A tenant must keep at least one active owner."
    assert world.uow.committed.users[owner.user_id].roles == (Role.OWNER,)
    # Once otto is back, an active owner remains after the same demotion.
    await UpdateUser(world.uow)(owner, otto.user_id, is_active=True)
    await UpdateUser(world.uow)(stale_otto, owner.user_id, roles=["member"])
    assert world.uow.committed.users[owner.user_id].roles == (Role.MEMBER,)


async def test_another_tenants_user_is_not_found() -> None:
    world = World()
    acme = await tenant_with_owner(world, "acme")
    globex = await tenant_with_owner(world, "globex")
    for action in (
        GetUser(world.uow)(acme, globex.user_id),
        UpdateUser(world.uow)(acme, globex.user_id, is_active=False),
        DeleteUser(world.uow)(acme, globex.user_id),
    ):
        with pytest.raises(NotFound):
            await action


async def test_unknown_roles_are_invalid() -> None:
    world = World()
    owner = await tenant_with_owner(world)
    for roles in (["superuser"], ["wizard"], []):
        with pytest.raises(Invalid):
            await add(world, owner, "mia", roles)


async def test_each_change_of_a_user_is_one_event_without_secrets() -> None:
    world = World()
    owner = await tenant_with_owner(world)
    before = len(world.events(owner.tenant_id))
    mia = await add(world, owner, "mia", ["member"])
    await UpdateUser(world.uow)(
        owner, mia.user_id, roles=["admin"], email="Mia2@x.example", settings={"theme": "dark"}
    )
    await DeleteUser(world.uow)(owner, mia.user_id)

    events = world.events(owner.tenant_id)[before:]
    assert [(e.action, e.actor_type, e.actor_id, e.target_type, e.target_id) for e in events] == [
        (action, "user", owner.user_id, "user", mia.user_id)
        for action in ("user.created", "user.updated", "user.deleted")
    ]
    created, updated, deleted = (e.changes for e in events)
    assert created == {
        "after": {
            "username": "mia",
            "email": "mia@x.example",
            "roles": ("member",),
            "is_active": True,
        }
    }
    # The role change with its values; the settings by name only.
    assert updated == {
        "before": {"email": "mia@x.example", "roles": ("member",)},
        "after": {"email": "mia2@x.example", "roles": ("admin",)},
        "changed": ["settings"],
    }
    assert deleted == {
        "before": {
            "username": "mia",
            "email": "mia2@x.example",
            "roles": ("admin",),
            "is_active": True,
        }
    }
    text = repr(world.events(owner.tenant_id))
    assert PASSWORD not in text
    assert "v1:" not in text
    assert "dark" not in text


async def test_a_refused_change_of_a_user_leaves_no_event() -> None:
    world = World()
    owner = await tenant_with_owner(world)
    admin = await add(world, owner, "adam", ["admin"])
    before = len(world.events(owner.tenant_id))
    refused = [
        # A taken username, the last owner demoted, an admin touching an owner.
        add(world, owner, "ADAM", ["member"]),
        UpdateUser(world.uow)(owner, owner.user_id, roles=["member"]),
        DeleteUser(world.uow)(admin, owner.user_id),
    ]
    for attempt in refused:
        with pytest.raises((Conflict, Forbidden)):
            await attempt
    assert len(world.events(owner.tenant_id)) == before

"""Ownership over HTTP on real PostgreSQL: members destroy only what they created, admins and
owners anything of their tenant, and a row whose creator is gone is theirs alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest

from tenantry.infrastructure.db import migrations

from ..conftest import Client, create_database, drop_database, plain_url
from .identity import add_user, owner_session
from .test_health import assert_problem

KINDS = ("project", "document", "file", "task")
# What a destroyed row looks like in the database, and what an untouched one does.
STATE = {
    "project": "select deleted_at is not null from projects where id = $1::uuid",
    "document": "select deleted_at is not null from documents where id = $1::uuid",
    "file": "select deleted_at is not null from files where id = $1::uuid",
    "task": "select status = 'cancelled' from tasks where id = $1::uuid",
}
CREATOR = {
    "project": "select owner_id from projects where id = $1::uuid",
    "document": "select created_by from documents where id = $1::uuid",
    "file": "select created_by from files where id = $1::uuid",
    "task": "select created_by from tasks where id = $1::uuid",
}


async def team(client: Client) -> dict[str, dict[str, str]]:
    """Tenant acme: its owner, an admin and two members, each signed in."""
    owner = await owner_session(client, "acme")
    return {
        "owner": owner,
        "admin": await add_user(client, owner, "ada", ["admin"], "acme"),
        "mia": await add_user(client, owner, "mia", ["member"], "acme"),
        "noah": await add_user(client, owner, "noah", ["member"], "acme"),
    }


async def user_id(client: Client, headers: dict[str, str]) -> str:
    me: dict[str, Any] = (await client.get("/api/v1/auth/me", headers=headers)).json()
    return str(me["id"])


async def upload(client: Client, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/files", headers=headers, files={"file": ("notes.txt", b"hello\n", "text/plain")}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def create_all(client: Client, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    """One of each owned kind, created by the holder of ``headers``."""
    project = await client.post("/api/v1/projects", headers=headers, json={"name": "Apollo"})
    assert project.status_code == 201, project.text
    document = await client.post(
        f"/api/v1/projects/{project.json()['id']}/documents",
        headers=headers,
        json={"title": "Plan", "content": "go"},
    )
    assert document.status_code == 201, document.text
    # No worker runs here: the task stays pending until someone cancels it.
    task = await client.post("/api/v1/tasks", headers=headers, json={"type": "noop"})
    assert task.status_code == 202, task.text
    return {
        "project": project.json(),
        "document": document.json(),
        "file": await upload(client, headers),
        "task": task.json(),
    }


async def destroy(
    client: Client, headers: dict[str, str], kind: str, thing: dict[str, Any]
) -> httpx.Response:
    if kind == "project":
        return await client.delete(f"/api/v1/projects/{thing['id']}", headers=headers)
    if kind == "document":
        return await client.delete(
            f"/api/v1/projects/{thing['project_id']}/documents/{thing['id']}", headers=headers
        )
    if kind == "file":
        return await client.delete(f"/api/v1/files/{thing['id']}", headers=headers)
    return await client.post(f"/api/v1/tasks/{thing['id']}/cancel", headers=headers)


def assert_destroyed(kind: str, response: httpx.Response) -> None:
    assert response.status_code == (202 if kind == "task" else 204), response.text


async def fetch(database_url: str, query: str, thing_id: str) -> Any:
    connection = await asyncpg.connect(plain_url(database_url))
    try:
        return await connection.fetchval(query, thing_id)
    finally:
        await connection.close()


async def test_a_member_may_not_delete_another_members_file(
    client: Client, database_url: str
) -> None:
    people = await team(client)
    file = await upload(client, people["mia"])

    assert_problem(await client.delete(f"/api/v1/files/{file['id']}", headers=people["noah"]), 403)

    kept = await client.get(f"/api/v1/files/{file['id']}", headers=people["mia"])
    assert kept.json()["created_by"] == await user_id(client, people["mia"])
    assert await fetch(database_url, STATE["file"], file["id"]) is False
    deleted = await client.delete(f"/api/v1/files/{file['id']}", headers=people["admin"])
    assert deleted.status_code == 204
    assert await fetch(database_url, STATE["file"], file["id"]) is True


async def test_members_destroy_what_they_created(client: Client, database_url: str) -> None:
    people = await team(client)
    mia = await user_id(client, people["mia"])
    things = await create_all(client, people["mia"])
    assert things["file"]["created_by"] == things["document"]["created_by"] == mia
    assert things["project"]["owner_id"] == mia

    # The document first: deleting its project would take it along.
    for kind in ("document", "project", "file", "task"):
        assert await fetch(database_url, CREATOR[kind], things[kind]["id"]) == UUID(mia)
        assert_destroyed(kind, await destroy(client, people["mia"], kind, things[kind]))
        assert await fetch(database_url, STATE[kind], things[kind]["id"]) is True


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("manager", ["admin", "owner"])
async def test_a_member_may_not_destroy_what_another_created_but_managers_may(
    client: Client, database_url: str, kind: str, manager: str
) -> None:
    people = await team(client)
    thing = (await create_all(client, people["mia"]))[kind]

    assert_problem(await destroy(client, people["noah"], kind, thing), 403)
    assert await fetch(database_url, STATE[kind], thing["id"]) is False

    assert_destroyed(kind, await destroy(client, people[manager], kind, thing))
    assert await fetch(database_url, STATE[kind], thing["id"]) is True


async def test_deleting_the_creator_leaves_the_rows_to_managers(
    client: Client, database_url: str
) -> None:
    people = await team(client)
    mia = await user_id(client, people["mia"])
    things = await create_all(client, people["mia"])

    removed = await client.delete(f"/api/v1/users/{mia}", headers=people["owner"])
    assert removed.status_code == 204, removed.text

    for kind in KINDS:
        # Nothing cascaded away: the row is there, live, with no creator.
        assert await fetch(database_url, STATE[kind], things[kind]["id"]) is False
        assert await fetch(database_url, CREATOR[kind], things[kind]["id"]) is None
    file = (
        await client.get(f"/api/v1/files/{things['file']['id']}", headers=people["noah"])
    ).json()
    assert file["created_by"] is None
    document = things["document"]
    document_url = f"/api/v1/projects/{document['project_id']}/documents/{document['id']}"
    assert (await client.get(document_url, headers=people["noah"])).json()["created_by"] is None

    for kind in ("document", "project", "file", "task"):
        assert_problem(await destroy(client, people["noah"], kind, things[kind]), 403)
        assert await fetch(database_url, STATE[kind], things[kind]["id"]) is False
        assert_destroyed(kind, await destroy(client, people["admin"], kind, things[kind]))
        assert await fetch(database_url, STATE[kind], things[kind]["id"]) is True


async def test_another_tenants_things_stay_not_found(client: Client, database_url: str) -> None:
    people = await team(client)
    things = await create_all(client, people["mia"])
    stranger = await owner_session(client, "globex")

    for kind in ("document", "project", "file", "task"):
        assert_problem(await destroy(client, stranger, kind, things[kind]), 404)
        assert await fetch(database_url, STATE[kind], things[kind]["id"]) is False


@pytest.fixture
async def empty_database(admin_database_url: str) -> AsyncIterator[str]:
    name = f"tenantry_ownership_{uuid4().hex[:12]}"
    url = await create_database(admin_database_url, name)
    yield url
    await drop_database(admin_database_url, name)


async def test_the_migration_gives_existing_rows_no_creator_and_goes_back(
    empty_database: str,
) -> None:
    await asyncio.to_thread(migrations.upgrade, empty_database, "0006_tasks")
    tenant, user, gone = uuid4(), uuid4(), uuid4()
    project, document, file, kept, dangling = (uuid4() for _ in range(5))
    connection = await asyncpg.connect(plain_url(empty_database))
    try:
        # As the migrating owner, before 0007: rows of every owned kind, and a task whose
        # submitter's user no longer exists (no foreign key guarded it then).
        await connection.execute(
            "insert into tenants (id, name, slug, created_at, updated_at)"
            " values ($1, 'Acme', 'acme', now(), now())",
            tenant,
        )
        await connection.execute(
            "insert into users (id, tenant_id, username, email, password_hash, roles,"
            " created_at, updated_at)"
            " values ($1, $2, 'mia', 'mia@acme.example', 'x', '{member}', now(), now())",
            user,
            tenant,
        )
        await connection.execute(
            "insert into projects (id, tenant_id, owner_id, name, created_at, updated_at)"
            " values ($1, $2, $3, 'Apollo', now(), now())",
            project,
            tenant,
            user,
        )
        await connection.execute(
            "insert into documents (id, tenant_id, project_id, title, created_at, updated_at)"
            " values ($1, $2, $3, 'Plan', now(), now())",
            document,
            tenant,
            project,
        )
        await connection.execute(
            "insert into files (id, tenant_id, original_filename, size, content_type, sha256,"
            " storage_key, created_at, updated_at)"
            " values ($1, $2, 'a.txt', 1, 'text/plain', '', 'k', now(), now())",
            file,
            tenant,
        )
        for task, submitter in ((kept, user), (dangling, gone)):
            await connection.execute(
                "insert into tasks (id, tenant_id, type, created_by, created_at, updated_at)"
                " values ($1, $2, 'noop', $3, now(), now())",
                task,
                tenant,
                submitter,
            )

        await asyncio.to_thread(migrations.upgrade, empty_database)
        creators = "select created_by from {} where id = $1"
        assert await connection.fetchval(creators.format("documents"), document) is None
        assert await connection.fetchval(creators.format("files"), file) is None
        assert await connection.fetchval(creators.format("tasks"), kept) == user
        assert await connection.fetchval(creators.format("tasks"), dangling) is None
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await connection.execute("update files set created_by = $1 where id = $2", gone, file)

        await asyncio.to_thread(migrations.downgrade, empty_database, "0006_tasks")
        columns = await connection.fetch(
            "select table_name from information_schema.columns"
            " where column_name = 'created_by' and table_schema = 'public'"
        )
        assert {row["table_name"] for row in columns} == {"tasks"}
        assert await connection.fetchval(creators.format("tasks"), kept) == user
    finally:
        await connection.close()

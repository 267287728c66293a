"""Requests in parallel through a real uvicorn. Two tenants over a pool of two connections: the
place a tenant could bleed through a pooled connection or a driver-level transaction; every
response and every row must belong to the tenant that asked. And two writers of one row holding
the same version: exactly one of them may succeed. And writes racing the delete of the row they
hang on (a document's project, an event's webhook): none outlives it, none fails for it. And
transactions that lock the same rows, a user's delete against that user's documents, uploads
and refreshes, an endpoint's delete against a worker's record of an attempt: they take the rows
in one order, so they wait for each other and never deadlock."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
import uvicorn

from tenantry import bootstrap
from tenantry.application.webhooks import DeliverWebhooks
from tenantry.cli.run import _uvicorn_options
from tenantry.config import Settings
from tenantry.domain.webhooks import DeliveryStatus, SendOutcome
from tenantry.infrastructure.db.webhooks import (
    SqlWebhookDeliveryRepository,
    SqlWebhookEndpointRepository,
)
from tenantry.infrastructure.embedded import free_port

from ..conftest import plain_url, uvicorn_serving
from .identity import PASSWORD
from .test_faults import until
from .test_files import stored_objects

CHAINS = 17  # per tenant, of 9 requests each: 153 requests per tenant
IN_FLIGHT = 16
ROUNDS = 20  # of two concurrent PATCHes of one project
# Of a deadlock race: each fix's test failed in most rounds before it.
DEADLOCK_ROUNDS = 10


@dataclass
class Caller:
    slug: str
    other: str
    headers: dict[str, str] = field(default_factory=dict)
    tenant_id: str = ""
    user_id: str = ""
    projects: set[str] = field(default_factory=set)
    documents: set[str] = field(default_factory=set)
    listed: set[str] = field(default_factory=set)
    requests: int = 0


async def sign_up(http: httpx.AsyncClient, caller: Caller) -> None:
    owner = {"username": "olive", "email": f"olive@{caller.slug}.example", "password": PASSWORD}
    created = await http.post(
        "/api/v1/tenants", json={"name": caller.slug, "slug": caller.slug, "owner": owner}
    )
    assert created.status_code == 201, created.text
    tokens = await http.post(
        "/api/v1/auth/login", json={"tenant": caller.slug, "login": "olive", "password": PASSWORD}
    )
    caller.headers = {"Authorization": f"Bearer {tokens.json()['access_token']}"}
    caller.tenant_id = created.json()["tenant"]["id"]
    caller.user_id = created.json()["user"]["id"]


async def chain(
    http: httpx.AsyncClient, caller: Caller, number: int, gate: asyncio.Semaphore
) -> None:
    """Create, read, edit and list, each answer checked against its caller as it comes."""
    mark = f"[{caller.slug}]"

    async def call(method: str, path: str, status: int, **kwargs: Any) -> Any:
        async with gate:
            response = await http.request(method, path, headers=caller.headers, **kwargs)
        caller.requests += 1
        assert response.status_code == status, (method, path, response.text)
        # Every name and text carries its tenant's mark: another tenant's shows up anywhere.
        assert f"[{caller.other}]" not in response.text, (method, path, response.text)
        return response.json()

    project = await call("POST", "/api/v1/projects", 201, json={"name": f"{mark} p{number}"})
    caller.projects.add(project["id"])
    assert project["owner_id"] == caller.user_id
    path = f"/api/v1/projects/{project['id']}"
    assert (await call("GET", path, 200))["name"] == f"{mark} p{number}"
    patched = await call("PATCH", path, 200, json={"description": f"{mark} d{number}"})
    assert (patched["id"], patched["description"]) == (project["id"], f"{mark} d{number}")
    document = await call(
        "POST", f"{path}/documents", 201, json={"title": f"{mark} t{number}", "content": mark}
    )
    caller.documents.add(document["id"])
    assert (document["project_id"], document["created_by"]) == (project["id"], caller.user_id)
    document_path = f"{path}/documents/{document['id']}"
    assert (await call("GET", document_path, 200))["content"] == mark
    edited = await call("PATCH", document_path, 200, json={"content": f"{mark} v2"})
    assert (edited["id"], edited["content"]) == (document["id"], f"{mark} v2")
    documents = await call("GET", f"{path}/documents", 200)
    assert [item["id"] for item in documents["items"]] == [document["id"]]
    projects = await call("GET", "/api/v1/projects", 200, params={"limit": 100})
    assert all(item["name"].startswith(mark) for item in projects["items"])
    caller.listed |= {item["id"] for item in projects["items"]}
    me = await call("GET", "/api/v1/auth/me", 200)
    assert (me["id"], me["tenant_id"]) == (caller.user_id, caller.tenant_id)


async def test_two_tenants_in_parallel_over_two_connections_never_cross(
    settings: Settings, clean_state: None, database_url: str
) -> None:
    small = msgspec.structs.replace(
        settings,
        host="127.0.0.1",
        port=free_port(),
        db_pool_size=2,
        db_max_overflow=0,
        # Sixteen requests queue for two connections on a busy machine: waiting is the point.
        db_pool_timeout=60,
    )
    app = bootstrap.create_app(small)
    callers = [Caller("acme", "globex"), Caller("globex", "acme")]
    gate = asyncio.Semaphore(IN_FLIGHT)
    async with (
        uvicorn_serving(uvicorn.Config(app, **_uvicorn_options(small))),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{small.port}", timeout=60) as http,
    ):
        for caller in callers:
            await sign_up(http, caller)
        # Interleaved: the chains of both tenants are in flight together.
        await asyncio.gather(
            *(chain(http, caller, number, gate) for number in range(CHAINS) for caller in callers)
        )
    for caller in callers:
        assert caller.requests == CHAINS * 9
        assert caller.listed == caller.projects
    connection = await asyncpg.connect(plain_url(database_url))
    try:
        for table in ("projects", "documents"):
            rows = await connection.fetch(f"select id, tenant_id from {table}")
            assert {str(row["id"]): str(row["tenant_id"]) for row in rows} == {
                row_id: caller.tenant_id for caller in callers for row_id in getattr(caller, table)
            }
    finally:
        await connection.close()


@asynccontextmanager
async def worker_adapters(settings: Settings) -> AsyncIterator[bootstrap.Container]:
    """A worker's adapters, driven by the test instead of arq's poll loop."""
    container = bootstrap.Container(settings)
    await container.start()
    try:
        yield container
    finally:
        await container.close()
        await container.alchemy.get_engine().dispose()


@asynccontextmanager
async def served_to(settings: Settings, caller: Caller) -> AsyncIterator[httpx.AsyncClient]:
    """A real server of the app, and a client of it signed up as ``caller``."""
    served = msgspec.structs.replace(settings, host="127.0.0.1", port=free_port())
    app = bootstrap.create_app(served)
    async with (
        uvicorn_serving(uvicorn.Config(app, **_uvicorn_options(served))),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}", timeout=60) as http,
    ):
        await sign_up(http, caller)
        yield http


async def test_two_concurrent_stale_updates_of_one_row_cannot_both_succeed(
    settings: Settings, clean_state: None
) -> None:
    """Two PATCHes sent together with the same If-Match, round after round: one conditional
    UPDATE wins; the other, whether it waited on the winner's row lock or ran after its commit,
    finds the version moved and is a 412. Never two 200s, and no write lost or doubled; the
    trail's before of each winner (read by its UPDATE) is the name the round began with."""
    caller = Caller("acme", "globex")
    names = ["v1"]
    async with served_to(settings, caller) as http:
        created = await http.post("/api/v1/projects", headers=caller.headers, json={"name": "v1"})
        assert created.status_code == 201, created.text
        path, etag = f"/api/v1/projects/{created.json()['id']}", created.headers["ETag"]
        for number in range(ROUNDS):
            headers = {**caller.headers, "If-Match": etag}
            answers = await asyncio.gather(
                *(
                    http.patch(path, headers=headers, json={"name": f"round {number} by {side}"})
                    for side in ("a", "b")
                )
            )
            assert sorted(answer.status_code for answer in answers) == [200, 412], [
                answer.text for answer in answers
            ]
            winner = next(answer for answer in answers if answer.status_code == 200)
            assert winner.json()["version"] == number + 2
            etag = winner.headers["ETag"]
            names.append(winner.json()["name"])
        stored = await http.get(path, headers=caller.headers)
        events = await http.get(
            "/api/v1/audit",
            headers=caller.headers,
            params={"action": "project.updated", "limit": ROUNDS + 1},
        )
    assert (stored.json()["version"], stored.json()["name"]) == (ROUNDS + 1, winner.json()["name"])
    assert events.status_code == 200, events.text
    assert [event["changes"] for event in reversed(events.json()["items"])] == [
        {"before": {"name": before}, "after": {"name": after}}
        for before, after in itertools.pairwise(names)
    ]


async def test_two_concurrent_deletes_of_one_row_answer_one_204_and_one_404(
    settings: Settings, clean_state: None
) -> None:
    """Two DELETEs of one project (and of one document, one file, one user, one webhook) sent
    together, round after round: both may read the row live, but the second delete, which
    waited on the first's row lock, finds it gone; it answers 404 and records nothing. One
    204, one 404 and one event."""
    caller = Caller("acme", "globex")
    async with served_to(settings, caller) as http:
        for number in range(ROUNDS):
            created = await http.post(
                "/api/v1/projects", headers=caller.headers, json={"name": f"p{number}"}
            )
            path = f"/api/v1/projects/{created.json()['id']}"
            document = await http.post(
                f"{path}/documents", headers=caller.headers, json={"title": "t", "content": "c"}
            )
            stored = await http.post(
                "/api/v1/files",
                headers=caller.headers,
                files={"file": ("a.txt", b"round %d" % number, "text/plain")},
            )
            assert stored.status_code == 201, stored.text
            user = await http.post(
                "/api/v1/users",
                headers=caller.headers,
                json={
                    "username": f"member{number}",
                    "email": f"member{number}@acme.example",
                    "password": PASSWORD,
                    "roles": ["member"],
                },
            )
            assert user.status_code == 201, user.text
            hook = await http.post(
                "/api/v1/webhooks",
                headers=caller.headers,
                json={"url": f"http://127.0.0.1:9/{number}", "events": ["project.created"]},
            )
            assert hook.status_code == 201, hook.text
            for target in (
                f"{path}/documents/{document.json()['id']}",
                path,
                f"/api/v1/files/{stored.json()['id']}",
                f"/api/v1/users/{user.json()['id']}",
                f"/api/v1/webhooks/{hook.json()['id']}",
            ):
                answers = await asyncio.gather(
                    *(http.delete(target, headers=caller.headers) for _ in range(2))
                )
                assert sorted(answer.status_code for answer in answers) == [204, 404], [
                    answer.text for answer in answers
                ]
        trail = await http.get("/api/v1/audit", headers=caller.headers, params={"limit": 200})
    actions = [event["action"] for event in trail.json()["items"]]
    deleted = ("project", "document", "file", "user", "webhook")
    assert [actions.count(f"{kind}.deleted") for kind in deleted] == [ROUNDS] * len(deleted)


async def test_a_document_created_while_its_project_is_deleted_is_refused_or_deleted_with_it(
    settings: Settings, clean_state: None
) -> None:
    """Documents created while their project is deleted, round after round: each create either
    comes first, and the delete takes its document with the rest, or comes after, and is a 404
    that wrote nothing. No document outlives its project."""
    caller = Caller("acme", "globex")
    created_documents = 0
    async with served_to(settings, caller) as http:
        for number in range(ROUNDS):
            created = await http.post(
                "/api/v1/projects", headers=caller.headers, json={"name": f"p{number}"}
            )
            path = f"/api/v1/projects/{created.json()['id']}"
            deleted, *answers = await asyncio.gather(
                http.delete(path, headers=caller.headers),
                *(
                    http.post(
                        f"{path}/documents",
                        headers=caller.headers,
                        json={"title": f"t{side}", "content": "c"},
                    )
                    for side in range(3)
                ),
            )
            assert deleted.status_code == 204, deleted.text
            assert {answer.status_code for answer in answers} <= {201, 404}, [
                answer.text for answer in answers
            ]
            for answer in answers:
                if answer.status_code == 201:
                    created_documents += 1
                    document = f"{path}/documents/{answer.json()['id']}"
                    found = await http.get(document, headers=caller.headers)
                    assert found.status_code == 404, (number, found.text)
        trail = await http.get(
            "/api/v1/audit",
            headers=caller.headers,
            params={"action": "document.created", "limit": 100},
        )
    assert len(trail.json()["items"]) == created_documents


async def new_webhook(http: httpx.AsyncClient, caller: Caller, number: int) -> str:
    """An endpoint of ``caller``'s tenant subscribed to project.created: its path."""
    hook = await http.post(
        "/api/v1/webhooks",
        headers=caller.headers,
        json={"url": f"http://127.0.0.1:9/{number}", "events": ["project.created"]},
    )
    assert hook.status_code == 201, hook.text
    return f"/api/v1/webhooks/{hook.json()['id']}"


async def test_changes_published_while_their_webhook_is_deleted_all_succeed(
    settings: Settings, clean_state: None
) -> None:
    """Projects created while the endpoint subscribed to their event is deleted, round after
    round: each creation's outbox write either sees the endpoint go and skips it, or holds it
    until its commit, the delete then taking the new delivery with the endpoint. Every
    creation succeeds (a delivery's key to an endpoint being deleted failed them with a 500)."""
    caller = Caller("acme", "globex")
    async with served_to(settings, caller) as http:
        for number in range(ROUNDS):
            path = await new_webhook(http, caller, number)
            deleted, *answers = await asyncio.gather(
                http.delete(path, headers=caller.headers),
                *(
                    http.post(
                        "/api/v1/projects", headers=caller.headers, json={"name": f"p{number}"}
                    )
                    for _ in range(4)
                ),
            )
            assert deleted.status_code == 204, deleted.text
            assert [answer.status_code for answer in answers] == [201] * 4, [
                answer.text for answer in answers
            ]
            assert (await http.get(path, headers=caller.headers)).status_code == 404
        listed = await http.get("/api/v1/projects", headers=caller.headers, params={"limit": 1})
    assert listed.json()["total"] == ROUNDS * 4


async def signed_in_member(
    http: httpx.AsyncClient, caller: Caller, number: int
) -> tuple[dict[str, str], str]:
    """A member of ``caller``'s tenant, added by its owner and signed in: their bearer header
    and their id."""
    login = {"username": f"member{number}", "email": f"member{number}@{caller.slug}.example"}
    added = await http.post(
        "/api/v1/users",
        headers=caller.headers,
        json={**login, "password": PASSWORD, "roles": ["member"]},
    )
    assert added.status_code == 201, added.text
    tokens = await http.post(
        "/api/v1/auth/login",
        json={"tenant": caller.slug, "login": login["username"], "password": PASSWORD},
    )
    return {"Authorization": f"Bearer {tokens.json()['access_token']}"}, added.json()["id"]


async def test_a_user_deleted_while_writing_is_deleted_and_their_writes_are_kept_or_refused(
    settings: Settings, clean_state: None
) -> None:
    """A member creating projects while an admin deletes them, round after round: the delete
    always succeeds (it held the member's row first, so a creation under way committed before
    and was cleared of its owner with the rest); a creation that came after is a 401, the
    member being gone, not a 500 on the owner's key."""
    caller = Caller("acme", "globex")
    async with served_to(settings, caller) as http:
        for number in range(ROUNDS):
            member, user_id = await signed_in_member(http, caller, number)
            deleted, *answers = await asyncio.gather(
                http.delete(f"/api/v1/users/{user_id}", headers=caller.headers),
                *(
                    http.post("/api/v1/projects", headers=member, json={"name": f"p{number}"})
                    for _ in range(4)
                ),
            )
            assert deleted.status_code == 204, deleted.text
            assert {answer.status_code for answer in answers} <= {201, 401}, [
                answer.text for answer in answers
            ]
            for answer in answers:
                if answer.status_code == 401:
                    assert answer.headers["content-type"] == "application/problem+json"
                    continue
                project = f"/api/v1/projects/{answer.json()['id']}"
                kept = await http.get(project, headers=caller.headers)
                assert kept.json()["owner_id"] is None, kept.text


async def test_a_user_deleted_while_writing_in_their_own_project_is_never_a_deadlock(
    settings: Settings, clean_state: None
) -> None:
    """A member creating documents in a project of their own while an admin deletes them: the
    create holds the member, then the project; the delete holds the member, then clears the
    projects they own. Both take the member first, so one waits for the other: the delete
    always succeeds, a document that came first is kept unattributed, one that came after is a
    401, and PostgreSQL never has a deadlock to break with a 500."""
    caller = Caller("acme", "globex")
    async with served_to(settings, caller) as http:
        for number in range(DEADLOCK_ROUNDS):
            member, user_id = await signed_in_member(http, caller, number)
            project = await http.post("/api/v1/projects", headers=member, json={"name": "mine"})
            documents = f"/api/v1/projects/{project.json()['id']}/documents"
            deleted, *answers = await asyncio.gather(
                http.delete(f"/api/v1/users/{user_id}", headers=caller.headers),
                *(
                    http.post(documents, headers=member, json={"title": f"d{i}", "content": ""})
                    for i in range(4)
                ),
            )
            assert deleted.status_code == 204, deleted.text
            assert {answer.status_code for answer in answers} <= {201, 401}, [
                answer.text for answer in answers
            ]
            kept = await http.get(documents, headers=caller.headers)
            assert {item["id"] for item in kept.json()["items"]} == {
                answer.json()["id"] for answer in answers if answer.status_code == 201
            }
            assert all(item["created_by"] is None for item in kept.json()["items"])


def small_upload(number: int) -> tuple[dict[str, str], bytes]:
    """A text file in a multipart body, small enough to hold no quota ahead: its headers and
    body."""
    boundary = f"small{number}"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        f"Content-Type: text/plain\r\n\r\nfile {number}\n\r\n--{boundary}--\r\n"
    ).encode()
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}, body


@asynccontextmanager
async def upload_held_half_way(
    http: httpx.AsyncClient,
    database_owner: asyncpg.Connection,
    tenant: uuid.UUID,
    credentials: dict[str, str],
) -> AsyncIterator[Callable[[], Awaitable[httpx.Response]]]:
    """A 3 MiB multipart upload that says its length, so its first transaction holds its quota
    before its bytes, sent with ``credentials`` and stopped half way once that hold is taken
    (the client having sent half its bytes does not mean the server has read them). Inside, the
    caller changes what it likes; what it is given lets the upload go on and answers it."""
    boundary, size = "heldhalfway", 3 * 1024 * 1024
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    go_on = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield head + b"a" * (size // 2)
        await go_on.wait()
        yield b"b" * (size - size // 2) + tail

    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(len(head) + size + len(tail)),
    }
    upload = asyncio.create_task(
        http.post("/api/v1/files", headers={**credentials, **headers}, content=body())
    )

    async def finish() -> httpx.Response:
        go_on.set()
        return await upload

    held = "select coalesce(sum(reserved_bytes), 0) > 0 from file_usage where id = $1"
    try:
        await until(lambda: database_owner.fetchval(held, tenant), "the upload's hold")
        yield finish
    finally:
        # Ended early (a failed assertion): the upload goes with the test, whatever it answers.
        upload.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await upload


@pytest.mark.parametrize(
    ("credential", "change"),
    [
        ("bearer", "deactivated"),
        ("bearer", "roles_changed"),
        ("bearer", "signed_out"),
        ("api_key", "revoked"),
        ("api_key", "deactivated"),
    ],
)
async def test_an_upload_under_way_whose_credentials_end_stores_nothing(
    settings: Settings,
    clean_state: None,
    database_owner: asyncpg.Connection,
    credential: str,
    change: str,
) -> None:
    """A large upload's credentials are confirmed before its bytes (an access token by its
    first transaction, which holds its quota; an API key by its own read) and again by its
    row's transaction, after them, as a small upload's are: a member deactivated, given other
    roles or signed out, or a key revoked, while the bytes stream is refused (401) there, and
    no row, object, hold or event stays."""
    caller = Caller("acme", "globex")
    async with served_to(settings, caller) as http:
        _, member_id = await signed_in_member(http, caller, 1)
        signed_in = await http.post(
            "/api/v1/auth/login",
            json={"tenant": caller.slug, "login": "member1", "password": PASSWORD},
        )
        tokens = signed_in.json()
        member = {"Authorization": f"Bearer {tokens['access_token']}"}
        if credential == "api_key":
            made = await http.post("/api/v1/auth/api-keys", headers=member, json={"name": "up"})
            assert made.status_code == 201, made.text
            key = made.json()
            member = {"X-API-Key": key["key"]}
        tenant_id = uuid.UUID(caller.tenant_id)
        async with upload_held_half_way(http, database_owner, tenant_id, member) as finish:
            if change == "signed_out":
                logout = {"refresh_token": tokens["refresh_token"]}
                answer = await http.post("/api/v1/auth/logout", json=logout)
            elif change == "revoked":
                owner_of_key = {"Authorization": f"Bearer {tokens['access_token']}"}
                answer = await http.delete(
                    f"/api/v1/auth/api-keys/{key['id']}", headers=owner_of_key
                )
            else:
                changed = {"is_active": False} if change == "deactivated" else {"roles": ["admin"]}
                answer = await http.patch(
                    f"/api/v1/users/{member_id}", headers=caller.headers, json=changed
                )
            assert answer.is_success, answer.text
            refused = await finish()
        assert refused.status_code == 401, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        usage = "select used_bytes, file_count, reserved_bytes from file_usage where id = $1"
        assert tuple(await database_owner.fetchrow(usage, tenant_id)) == (0, 0, 0)
        assert await database_owner.fetchval("select count(*) from files") == 0
        assert await database_owner.fetchval("select count(*) from file_reservations") == 0
        events = "select count(*) from audit_events where action = 'file.uploaded'"
        assert await database_owner.fetchval(events) == 0
        assert stored_objects(settings) == []


async def test_a_user_deleted_while_uploading_and_deleting_files_is_never_a_deadlock(
    settings: Settings, clean_state: None
) -> None:
    """A member uploading files and deleting one of theirs while an admin deletes them. An
    upload's row charges the tenant's usage row and names the member; a file's delete changes
    the file, then the usage row; the member's delete locks the member, then clears their
    files. The upload locks the member first, so the three never wait in a circle: the delete
    always succeeds, and each upload or file delete came first, or is refused (401, or 403 for
    a file no longer the member's); never the 500 of a deadlock."""
    caller = Caller("acme", "globex")
    async with served_to(settings, caller) as http:
        for number in range(ROUNDS):
            member, user_id = await signed_in_member(http, caller, number)
            headers, body = small_upload(number)
            files = []
            for _ in range(3):
                made = await http.post("/api/v1/files", headers={**member, **headers}, content=body)
                assert made.status_code == 201, made.text
                files.append(f"/api/v1/files/{made.json()['id']}")
            deleted, *answers = await asyncio.gather(
                http.delete(f"/api/v1/users/{user_id}", headers=caller.headers),
                *(http.delete(path, headers=member) for path in files),
                *(
                    http.post("/api/v1/files", headers={**member, **headers}, content=body)
                    for _ in range(3)
                ),
            )
            assert deleted.status_code == 204, deleted.text
            # 403: a file delete that began before the member's delete and found the file
            # no longer theirs (its creator cleared).
            assert {answer.status_code for answer in answers} <= {201, 204, 401, 403}, [
                answer.text for answer in answers
            ]


async def test_a_user_deleted_while_refreshing_their_sessions_is_never_a_deadlock(
    settings: Settings, clean_state: None
) -> None:
    """A member refreshing four sessions while an admin deletes them: a refresh marks its token
    used and writes the next one, which names the member; the delete locks the member, then
    removes their tokens by the key's cascade. Both take the member first, so one waits for
    the other: the delete always succeeds, and each refresh either came first (200, its new
    token removed with the member) or finds the member gone (401); never the 500 of a
    deadlock."""
    roomy = msgspec.structs.replace(
        settings,
        login_attempts_per_account=10 * DEADLOCK_ROUNDS,
        login_attempts_per_address=10 * DEADLOCK_ROUNDS,
    )
    caller = Caller("acme", "globex")
    async with served_to(roomy, caller) as http:
        for number in range(DEADLOCK_ROUNDS):
            _, user_id = await signed_in_member(http, caller, number)
            refresh_tokens = []
            for _ in range(4):
                signed_in = await http.post(
                    "/api/v1/auth/login",
                    json={"tenant": caller.slug, "login": f"member{number}", "password": PASSWORD},
                )
                assert signed_in.status_code == 200, signed_in.text
                refresh_tokens.append(signed_in.json()["refresh_token"])
            deleted, *answers = await asyncio.gather(
                http.delete(f"/api/v1/users/{user_id}", headers=caller.headers),
                *(
                    http.post("/api/v1/auth/refresh", json={"refresh_token": token})
                    for token in refresh_tokens
                ),
            )
            assert deleted.status_code == 204, deleted.text
            assert {answer.status_code for answer in answers} <= {200, 401}, [
                answer.text for answer in answers
            ]
            for answer in answers:
                if answer.status_code == 200:
                    again = {"refresh_token": answer.json()["refresh_token"]}
                    assert (await http.post("/api/v1/auth/refresh", json=again)).status_code == 401


async def test_sign_ups_of_one_slug_at_once_are_one_201_and_the_rest_409(
    settings: Settings, clean_state: None
) -> None:
    """Three sign-ups of one slug sent together, round after round: all read the slug free,
    the first insert wins, and the others, which waited on its index entry, are 409s (not the
    500 of a unique violation nobody named)."""
    roomy = msgspec.structs.replace(settings, register_attempts_per_address=10 * ROUNDS)
    caller = Caller("acme", "globex")
    async with served_to(roomy, caller) as http:
        for number in range(ROUNDS):
            owner = {"username": "olive", "email": f"olive@{number}.example", "password": PASSWORD}
            answers = await asyncio.gather(
                *(
                    http.post(
                        "/api/v1/tenants",
                        json={"name": f"Same {number}", "slug": f"same-{number}", "owner": owner},
                    )
                    for _ in range(3)
                )
            )
            assert sorted(answer.status_code for answer in answers) == [201, 409, 409], [
                answer.text for answer in answers
            ]
            refused = next(answer for answer in answers if answer.status_code == 409)
            assert refused.json()["errors"] == [{"field": "slug", "message": "is taken"}]


async def test_a_webhook_pinged_and_changed_while_deleted_is_deleted_and_the_rest_404(
    settings: Settings, clean_state: None
) -> None:
    """A ping and a change of an endpoint sent with its delete, round after round: the delete
    always succeeds; the ping came first (and its delivery went with the endpoint) or finds
    none, and so does the change. Never a 500 on the ping delivery's key."""
    caller = Caller("acme", "globex")
    async with served_to(settings, caller) as http:
        for number in range(ROUNDS):
            path = await new_webhook(http, caller, number)
            deleted, pinged, changed = await asyncio.gather(
                http.delete(path, headers=caller.headers),
                http.post(f"{path}/ping", headers=caller.headers),
                http.patch(path, headers=caller.headers, json={"events": ["project.updated"]}),
            )
            assert deleted.status_code == 204, deleted.text
            assert pinged.status_code in {202, 404}, pinged.text
            assert changed.status_code in {200, 404}, changed.text
            assert (await http.get(path, headers=caller.headers)).status_code == 404


async def test_a_ping_does_not_wait_for_a_change_of_its_endpoint_under_way(
    settings: Settings, clean_state: None, database_url: str
) -> None:
    """A ping holds its endpoint as the delivery's key would (FOR KEY SHARE): only a delete
    conflicts with it. An update of the endpoint left open (as a PATCH or a worker's record of
    an attempt holds it) does not keep the ping waiting."""
    caller = Caller("acme", "globex")
    async with served_to(settings, caller) as http:
        path = await new_webhook(http, caller, 0)
        owner = await asyncpg.connect(plain_url(database_url))
        try:
            async with owner.transaction():
                await owner.execute(
                    "update webhook_endpoints set failures = failures where id = $1",
                    uuid.UUID(path.rsplit("/", 1)[1]),
                )
                pinging = asyncio.create_task(http.post(f"{path}/ping", headers=caller.headers))
                while not pinging.done():
                    waiting = await owner.fetchval(
                        "select count(*) from pg_stat_activity"
                        " where datname = current_database() and wait_event_type = 'Lock'"
                    )
                    assert waiting == 0, "the ping waits for the endpoint's update"
                    await asyncio.sleep(0.05)
            assert (await pinging).status_code == 202, (await pinging).text
        finally:
            await owner.close()


class Answering:
    """The webhook sender's port, answering 200 at once: the receiver is not what is raced."""

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> SendOutcome:
        return SendOutcome(duration_ms=1, status=200)


async def test_a_webhook_deleted_while_an_attempt_is_recorded_is_deleted_without_a_deadlock(
    settings: Settings, clean_state: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker records a delivery's attempt (the delivery's row and its endpoint's counters)
    while the endpoint is deleted (the endpoint, then its deliveries by the key's cascade). The
    recording is held between its two statements while the delete starts: taken in opposite
    orders the two deadlocked, and PostgreSQL failed one after a second. The recording takes
    the endpoint first, as the delete does: the delete waits for it, then goes through."""
    first_done, go_on = asyncio.Event(), asyncio.Event()
    recorded: list[str] = []

    def gated(repository: type[Any]) -> None:
        attempted = repository.attempted

        async def held(self: Any, *args: Any, **kwargs: Any) -> None:
            await attempted(self, *args, **kwargs)
            recorded.append(repository.__name__)
            if len(recorded) == 1:
                first_done.set()
                await go_on.wait()

        monkeypatch.setattr(repository, "attempted", held)

    gated(SqlWebhookDeliveryRepository)
    gated(SqlWebhookEndpointRepository)
    caller = Caller("acme", "globex")
    async with served_to(settings, caller) as http, worker_adapters(settings) as container:
        path = await new_webhook(http, caller, 0)
        created = await http.post("/api/v1/projects", headers=caller.headers, json={"name": "A"})
        assert created.status_code == 201, created.text
        deliver = DeliverWebhooks(
            units=container.unit_of_work,
            sender=Answering(),
            clock=container.clock,
            policy=container.webhook_policy,
        )
        delivering = asyncio.create_task(deliver())
        await first_done.wait()
        deleting = asyncio.create_task(http.delete(path, headers=caller.headers))
        # Long enough for the delete to reach the row the recording holds.
        await asyncio.sleep(0.5)
        go_on.set()
        (delivered,) = await delivering
        deleted = await deleting
    assert deleted.status_code == 204, deleted.text
    assert delivered.status == DeliveryStatus.SUCCEEDED
    assert recorded == ["SqlWebhookEndpointRepository", "SqlWebhookDeliveryRepository"]

"""Projects and documents over HTTP, on real PostgreSQL under row level security."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import asyncpg
import pytest
from sqlalchemy import bindparam, func, literal_column, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenantry.domain.projects import ProjectRepository
from tenantry.infrastructure.db.citus import CITUS_INSTALLED
from tenantry.infrastructure.db.documents import DocumentModel, SqlDocumentRepository
from tenantry.infrastructure.db.tenancy import DriverStatement, TenantSession, of_tenant
from tenantry.infrastructure.db.uow import SqlUnitOfWork

from ..conftest import Client, captured_logs, plain_url
from .identity import add_user, create_tenant, owner_session
from .test_faults import assert_retry_later, unavailable_causes
from .test_health import assert_problem
from .test_tenancy import engine_for


async def test_project_crud_with_etags(client: Client) -> None:
    owner = await owner_session(client, "acme")
    created = await client.post(
        "/api/v1/projects", headers=owner, json={"name": " Apollo ", "description": "moon"}
    )
    assert created.status_code == 201
    project = created.json()
    assert project["name"] == "Apollo"
    assert project["version"] == 1
    assert created.headers["etag"] == '"1"'

    fetched = await client.get(f"/api/v1/projects/{project['id']}", headers=owner)
    assert fetched.json() == project
    assert fetched.headers["etag"] == '"1"'

    changed = await client.patch(
        f"/api/v1/projects/{project['id']}",
        headers={**owner, "If-Match": '"1"'},
        json={"name": "Artemis"},
    )
    assert changed.status_code == 200
    assert changed.json()["version"] == 2
    assert changed.headers["etag"] == '"2"'
    assert changed.json()["description"] == "moon"

    stale = await client.patch(
        f"/api/v1/projects/{project['id']}",
        headers={**owner, "If-Match": '"1"'},
        json={"name": "Gemini"},
    )
    assert_problem(stale, 412)
    stale_body = await client.patch(
        f"/api/v1/projects/{project['id']}", headers=owner, json={"name": "Gemini", "version": 1}
    )
    assert_problem(stale_body, 412)
    blind = await client.patch(
        f"/api/v1/projects/{project['id']}", headers=owner, json={"description": "mars"}
    )
    assert blind.json()["version"] == 3

    assert (
        await client.delete(f"/api/v1/projects/{project['id']}", headers=owner)
    ).status_code == 204
    assert_problem(await client.get(f"/api/v1/projects/{project['id']}", headers=owner), 404)
    assert_problem(await client.delete(f"/api/v1/projects/{project['id']}", headers=owner), 404)


async def test_documents_live_and_die_with_their_project(client: Client, database_url: str) -> None:
    owner = await owner_session(client, "acme")
    project = (await client.post("/api/v1/projects", headers=owner, json={"name": "Apollo"})).json()
    base = f"/api/v1/projects/{project['id']}/documents"
    created = await client.post(
        base, headers=owner, json={"title": "Plan", "content": "# Go", "metadata": {"tags": ["a"]}}
    )
    assert created.status_code == 201
    document = created.json()
    assert document["metadata"] == {"tags": ["a"]}
    assert document["project_id"] == project["id"]

    changed = await client.patch(
        f"{base}/{document['id']}",
        headers={**owner, "If-Match": 'W/"1"'},
        json={"content": "# Gone"},
    )
    assert changed.json()["version"] == 2
    assert_problem(
        await client.patch(
            f"{base}/{document['id']}", headers={**owner, "If-Match": '"1"'}, json={"title": "x"}
        ),
        412,
    )
    assert_problem(
        await client.patch(
            f"{base}/{document['id']}",
            headers={**owner, "If-Match": "nonsense"},
            json={"title": "x"},
        ),
        400,
    )

    listed = (await client.get(base, headers=owner)).json()
    assert listed["total"] == 1

    await client.delete(f"/api/v1/projects/{project['id']}", headers=owner)
    assert_problem(await client.get(f"{base}/{document['id']}", headers=owner), 404)
    assert_problem(await client.get(base, headers=owner), 404)
    assert_problem(await client.post(base, headers=owner, json={"title": "t", "content": "c"}), 404)
    connection = await asyncpg.connect(plain_url(database_url))
    try:
        deleted = await connection.fetchval(
            "select deleted_at is not null from documents where id = $1::uuid", document["id"]
        )
    finally:
        await connection.close()
    assert deleted is True


async def test_lists_page_search_sort_and_filter(client: Client) -> None:
    owner = await owner_session(client, "acme")
    # Lowercase names: the order is the same under C and linguistic collations.
    for name in ("zeta", "alpha", "beta 50%", "gamma_ray"):
        await client.post("/api/v1/projects", headers=owner, json={"name": name})
    names = lambda body: [p["name"] for p in body["items"]]  # noqa: E731

    by_name = (
        await client.get("/api/v1/projects", headers=owner, params={"order_by": "name"})
    ).json()
    assert names(by_name) == ["alpha", "beta 50%", "gamma_ray", "zeta"]
    assert by_name["total"] == 4
    page = (
        await client.get(
            "/api/v1/projects", headers=owner, params={"order_by": "-name", "limit": 2, "offset": 1}
        )
    ).json()
    assert names(page) == ["gamma_ray", "beta 50%"]
    assert (page["total"], page["limit"], page["offset"]) == (4, 2, 1)

    assert names(
        (await client.get("/api/v1/projects", headers=owner, params={"q": "ALPHA"})).json()
    ) == ["alpha"]
    assert names(
        (await client.get("/api/v1/projects", headers=owner, params={"q": "%"})).json()
    ) == ["beta 50%"]
    assert names(
        (await client.get("/api/v1/projects", headers=owner, params={"q": "_"})).json()
    ) == ["gamma_ray"]

    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (
        await client.get("/api/v1/projects", headers=owner, params={"created_after": future})
    ).json()["total"] == 0
    assert (
        await client.get("/api/v1/projects", headers=owner, params={"created_before": future})
    ).json()["total"] == 4

    for bad in (
        {"order_by": "password"},
        {"limit": 0},
        {"limit": 101},
        {"created_after": "yesterday"},
        {"q": "x" * 201},
    ):
        assert_problem(await client.get("/api/v1/projects", headers=owner, params=bad), 422)


async def test_another_tenants_projects_and_documents_are_404(client: Client) -> None:
    acme = await owner_session(client, "acme")
    globex = await owner_session(client, "globex")
    project = (await client.post("/api/v1/projects", headers=acme, json={"name": "Secret"})).json()
    document = (
        await client.post(
            f"/api/v1/projects/{project['id']}/documents",
            headers=acme,
            json={"title": "t", "content": "c"},
        )
    ).json()
    base = f"/api/v1/projects/{project['id']}"
    for method, path, body in (
        ("get", base, None),
        ("patch", base, {"name": "mine"}),
        ("delete", base, None),
        ("get", f"{base}/documents", None),
        ("post", f"{base}/documents", {"title": "t", "content": "c"}),
        ("get", f"{base}/documents/{document['id']}", None),
        ("patch", f"{base}/documents/{document['id']}", {"title": "mine"}),
        ("delete", f"{base}/documents/{document['id']}", None),
    ):
        kwargs = {"json": body} if body is not None else {}
        response = await getattr(client, method)(path, headers=globex, **kwargs)
        assert_problem(response, 404)
        assert "Secret" not in response.text
    assert (await client.get("/api/v1/projects", headers=globex)).json()["total"] == 0
    assert (await client.get(base, headers=acme)).json()["name"] == "Secret"


async def test_members_edit_but_only_owners_and_admins_delete_others_projects(
    client: Client,
) -> None:
    owner = await owner_session(client, "acme")
    member = await add_user(client, owner, "mia", ["member"], "acme")
    theirs = (await client.post("/api/v1/projects", headers=owner, json={"name": "Owner's"})).json()
    mine = (await client.post("/api/v1/projects", headers=member, json={"name": "Mia's"})).json()
    assert (
        await client.patch(
            f"/api/v1/projects/{theirs['id']}", headers=member, json={"description": "+"}
        )
    ).status_code == 200
    assert_problem(await client.delete(f"/api/v1/projects/{theirs['id']}", headers=member), 403)
    assert (
        await client.delete(f"/api/v1/projects/{mine['id']}", headers=member)
    ).status_code == 204


async def test_bad_bodies_are_4xx(client: Client) -> None:
    owner = await owner_session(client, "acme")
    for body in (
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 201},
        {},
        {"name": "a", "owner_id": "x"},
    ):
        assert_problem(await client.post("/api/v1/projects", headers=owner, json=body), 422)
    project = (await client.post("/api/v1/projects", headers=owner, json={"name": "a"})).json()
    base = f"/api/v1/projects/{project['id']}/documents"
    for body in (
        {"title": "", "content": "c"},
        {"title": "t"},
        {"title": "t", "content": "c", "metadata": [1]},
    ):
        assert_problem(await client.post(base, headers=owner, json=body), 422)
    assert_problem(
        await client.patch(f"/api/v1/projects/{project['id']}", headers=owner, json={"version": 0}),
        422,
    )
    assert_problem(await client.get("/api/v1/projects/not-a-uuid", headers=owner), 404)
    assert_problem(await client.get("/api/v1/projects"), 401)


async def test_list_filters_take_rfc3339_times_only(client: Client) -> None:
    owner = await owner_session(client, "acme")
    project = (await client.post("/api/v1/projects", headers=owner, json={"name": "A"})).json()
    lists = ["/api/v1/projects", f"/api/v1/projects/{project['id']}/documents", "/api/v1/files"]
    for path in lists:
        for value in ("0.5", "2024-01-01T00:00:00", "2024-01-01", "2024-13-01T00:00:00Z"):
            response = await client.get(path, headers=owner, params={"created_after": value})
            body = assert_problem(response, 422)
            assert body["errors"] == [
                {"field": "created_after", "message": "must be an RFC 3339 date-time"}
            ]
        found = await client.get(
            path, headers=owner, params={"created_before": "2999-01-01T00:00:00+02:00"}
        )
        assert found.status_code == 200
        # Valid times whose offset takes them past the calendar Python keeps: before or after
        # every row, not refused.
        for bound, value, rows in (
            ("created_after", "0001-01-01T00:00:00+01:00", found.json()["total"]),
            ("created_before", "0001-01-01T00:00:00+01:00", 0),
            ("created_after", "9999-12-31T23:59:59-23:59", 0),
            ("created_before", "9999-12-31T23:59:59-23:59", found.json()["total"]),
        ):
            listed = await client.get(path, headers=owner, params={bound: value})
            assert listed.status_code == 200, listed.text
            assert listed.json()["total"] == rows


async def test_input_the_database_cannot_hold_is_422_not_500(client: Client) -> None:
    owner = await owner_session(client, "acme")
    project = (await client.post("/api/v1/projects", headers=owner, json={"name": "A"})).json()
    base = f"/api/v1/projects/{project['id']}"
    refused = [
        await client.post("/api/v1/projects", headers=owner, json={"name": "a\u0000b"}),
        await client.get("/api/v1/projects", headers=owner, params={"q": "a\u0000"}),
        await client.get("/api/v1/projects", headers=owner, params={"offset": 2**63}),
        await client.patch(base, headers=owner, json={"version": 2**31}),
        # NUL deep in free-form JSON, which no schema pattern reaches: PostgreSQL refuses it.
        await client.post(
            f"{base}/documents",
            headers=owner,
            json={"title": "t", "content": "c", "metadata": {"k": ["a\u0000"]}},
        ),
    ]
    for response in refused:
        assert_problem(response, 422)
    # A refused row is refused by the commit that writes it (add_at_commit): nothing of its
    # transaction is written, its audit event neither.
    listed = (await client.get("/api/v1/projects", headers=owner)).json()
    assert [row["name"] for row in listed["items"]] == ["A"]
    assert (await client.get(f"{base}/documents", headers=owner)).json()["total"] == 0
    trail = (await client.get("/api/v1/audit", headers=owner)).json()["items"]
    assert [event["action"] for event in trail].count("project.created") == 1
    assert "document.created" not in [event["action"] for event in trail]
    # An ETag past any version the column can hold can only be stale.
    stale = {**owner, "If-Match": '"9999999999"'}
    assert_problem(await client.patch(base, headers=stale, json={"name": "B"}), 412)
    assert (await client.get(base, headers=owner)).json()["name"] == "A"


# How PostgreSQL fails a write when it cannot extend a table's file: the disk is full.
NO_ROOM_TRIGGER = (
    """
    CREATE FUNCTION test_no_room() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.name = 'no room' THEN
            RAISE EXCEPTION 'could not extend file "base/1/2": No space left on device'
                USING ERRCODE = 'disk_full';
        END IF;
        RETURN NEW;
    END $$
    """,
    """
    CREATE TRIGGER test_no_room BEFORE INSERT OR UPDATE ON projects
        FOR EACH ROW EXECUTE FUNCTION test_no_room()
    """,
)


async def test_a_database_out_of_room_is_a_503_to_retry_not_a_500(
    client: Client, database_owner: asyncpg.Connection
) -> None:
    """A write PostgreSQL cannot store for want of resources (SQLSTATE class 53, here its disk
    full) is the server's to recover: a 503 with Retry-After, the cause in the log alone,
    nothing of the transaction written, on the commit's path (a create) and the ORM's (an
    update); the same request succeeds once there is room."""
    owner = await owner_session(client, "acme")
    project = (await client.post("/api/v1/projects", headers=owner, json={"name": "A"})).json()
    base = f"/api/v1/projects/{project['id']}"
    current = {**owner, "If-Match": (await client.get(base, headers=owner)).headers["etag"]}
    on_citus = await database_owner.fetchval(CITUS_INSTALLED)
    if on_citus:
        # Citus runs a distributed table's triggers on its shards, once told that is meant.
        await database_owner.execute("SET citus.enable_unsafe_triggers TO on")
    for statement in NO_ROOM_TRIGGER:
        await database_owner.execute(statement)
    try:
        with captured_logs() as lines:
            refused = [
                await client.post("/api/v1/projects", headers=owner, json={"name": "no room"}),
                await client.patch(base, headers=current, json={"name": "no room"}),
            ]
        for response in refused:
            assert_retry_later(response)
            assert "No space" not in response.text
        causes = unavailable_causes(lines)
        assert len(causes) == len(refused)
        for cause in causes:
            assert cause.startswith("database out of resources (53100: ")
            assert "No space left on device" in cause
        listed = (await client.get("/api/v1/projects", headers=owner)).json()
        assert [row["name"] for row in listed["items"]] == ["A"]
        trail = (await client.get("/api/v1/audit", headers=owner)).json()["items"]
        assert [event["action"] for event in trail].count("project.created") == 1
        assert "project.updated" not in [event["action"] for event in trail]
    finally:
        await database_owner.execute("DROP TRIGGER test_no_room ON projects")
        await database_owner.execute("DROP FUNCTION test_no_room()")
        if on_citus:
            await database_owner.execute("RESET citus.enable_unsafe_triggers")
    renamed = await client.patch(base, headers=current, json={"name": "no room"})
    assert renamed.status_code == 200, renamed.text
    created = await client.post("/api/v1/projects", headers=owner, json={"name": "no room"})
    assert created.status_code == 201, created.text


async def test_a_row_added_at_commit_is_given_what_the_database_would_fill_or_refuse() -> None:
    """add_at_commit answers with the row as given, before anything is written: it guesses no
    value the table would fill in or refuse to leave NULL, and queues nothing for the commit."""
    session = AsyncSession()
    documents = SqlDocumentRepository(session, uuid4())
    with pytest.raises(TypeError, match=r"documents\.title needs a value given"):
        await documents.add_at_commit(project_id=uuid4(), content="c")
    added = await documents.add_at_commit(project_id=uuid4(), title="t")
    assert (added.content, added.created_by, added.metadata, added.version) == ("", None, {}, 1)
    # A document is written new and live by its function (0027_add_document): a value it
    # would not write is refused rather than left out.
    with pytest.raises(TypeError, match=r"cannot be given \['deleted_at'\]"):
        await documents.add_at_commit(project_id=uuid4(), title="t", deleted_at=datetime.now(UTC))


@contextlib.asynccontextmanager
async def app_sessions(app_database_url: str) -> AsyncIterator[async_sessionmaker[TenantSession]]:
    """Units of work's sessions as the app's role, outside any request."""
    engine = engine_for(app_database_url)
    try:
        yield async_sessionmaker(engine, expire_on_commit=False, class_=TenantSession)
    finally:
        await engine.dispose()


async def test_rows_added_at_commit_with_other_columns_given_are_each_written_as_given(
    client: Client, app_database_url: str, database_owner: asyncpg.Connection
) -> None:
    """Rows of one table appended to one commit, the first with a column the second leaves
    out: each is inserted with its own columns, none borrowing another's."""
    created = await create_tenant(client, "acme")
    tenant_id, owner_id = UUID(created["tenant"]["id"]), UUID(created["user"]["id"])
    async with app_sessions(app_database_url) as sessions, sessions() as session:
        uow = SqlUnitOfWork(session)
        projects = uow.repository(ProjectRepository, tenant_id)
        owned = await projects.add_at_commit(name="owned", owner_id=owner_id)
        unowned = await projects.add_at_commit(name="unowned")
        await uow.commit()
    rows = await database_owner.fetch(
        "select id, name, owner_id from projects where tenant_id = $1 order by name", tenant_id
    )
    assert [tuple(row) for row in rows] == [
        (owned.id, "owned", owner_id),
        (unowned.id, "unowned", None),
    ]


async def test_documents_deleted_at_commit_are_those_of_their_project_and_only_if_it_commits(
    client: Client, app_database_url: str, database_owner: asyncpg.Connection
) -> None:
    """soft_delete_all_at_commit writes nothing until the commit, which writes it in its own
    round trip: the project's live documents, not another project's; a rollback, none. Its
    statement's arguments become literals: twelve of them ($10 and up), braces and a quote
    among them, come back as given, and so do the statement's own braces."""
    created = await create_tenant(client, "acme")
    tenant_id = UUID(created["tenant"]["id"])
    rolled_back, at = datetime(2026, 12, 5, tzinfo=UTC), datetime(2026, 12, 6, tzinfo=UTC)
    async with app_sessions(app_database_url) as sessions:
        async with sessions() as session:
            uow = SqlUnitOfWork(session)
            projects = uow.repository(ProjectRepository, tenant_id)
            gone, kept = await projects.add(name="gone"), await projects.add(name="kept")
            documents = SqlDocumentRepository(session, tenant_id)
            going = await documents.add(project_id=gone.id, title=gone.name)
            await documents.add(project_id=kept.id, title=kept.name)
            await uow.commit()
        for moment in (rolled_back, at):
            async with sessions() as session:
                documents = SqlDocumentRepository(session, tenant_id)
                await documents.soft_delete_all_at_commit(moment, project_id=gone.id)
                # Live until the commit, in the transaction too.
                assert await documents.get(going.id, project_id=gone.id) is not None
                if moment == at:
                    await SqlUnitOfWork(session).commit()
        pieces = {f"a{number}": f"{{p{number}}}" for number in range(9)} | {"a9": "'}{"}
        retitled = DriverStatement(
            update(DocumentModel)
            .where(of_tenant(DocumentModel), DocumentModel.project_id == bindparam("project"))
            .values(
                # Braces of the statement's own, beside the arguments'.
                title=func.concat(
                    literal_column("'{}'"), *(bindparam(name) for name in sorted(pieces))
                ),
                updated_at=func.now(),
            )
        )
        async with sessions() as session:
            await SqlDocumentRepository(session, tenant_id).get(uuid4())
            retitled.run_at_commit(
                session, tenant_id, tenant_id=tenant_id, project=kept.id, **pieces
            )
            await SqlUnitOfWork(session).commit()
    rows = await database_owner.fetch(
        "select d.title, d.deleted_at from documents d"
        " join projects p on p.tenant_id = d.tenant_id and p.id = d.project_id"
        " where d.tenant_id = $1 order by p.name",
        tenant_id,
    )
    assert [tuple(row) for row in rows] == [
        ("gone", at),
        ("{}" + "".join(pieces[name] for name in sorted(pieces)), None),
    ]


# (name or title, created_at, updated_at), the times in minutes past SORT_BASE: a tie on the
# name (rows 1 and 3) and one on updated_at (rows 1 and 4).
SORT_ROWS = [("delta", 1, 5), ("alpha", 2, 3), ("charlie", 3, 1), ("alpha", 4, 4), ("bravo", 5, 3)]
SORT_BASE = datetime(2026, 1, 1, tzinfo=UTC)
# The rows' order for each order_by, read off the table by hand; ties go by created_at ascending
# whichever way the key sorts, so that pages do not shuffle.
SORTED_ROWS = {
    "created_at": [0, 1, 2, 3, 4],
    "-created_at": [4, 3, 2, 1, 0],
    "name": [1, 3, 4, 2, 0],
    "-name": [0, 2, 4, 1, 3],
    "updated_at": [2, 1, 4, 3, 0],
    "-updated_at": [0, 3, 1, 4, 2],
}


@pytest.mark.parametrize("resource", ["projects", "documents"])
async def test_each_order_by_lists_rows_in_that_order(
    client: Client, database_url: str, resource: str
) -> None:
    owner = await owner_session(client, "acme")
    path, field, table = "/api/v1/projects", "name", "projects"
    if resource == "documents":
        parent = (await client.post(path, headers=owner, json={"name": "P"})).json()
        path, field, table = f"{path}/{parent['id']}/documents", "title", "documents"
    ids = []
    for name, _, _ in SORT_ROWS:
        body = {field: name, "content": "c"} if resource == "documents" else {field: name}
        created = await client.post(path, headers=owner, json=body)
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    # Times set as the owner, so that the order of the rows owes nothing to request timing.
    connection = await asyncpg.connect(plain_url(database_url))
    try:
        for row_id, (_, created_at, updated_at) in zip(ids, SORT_ROWS, strict=True):
            await connection.execute(
                f"update {table} set created_at = $2, updated_at = $3 where id = $1::uuid",
                row_id,
                SORT_BASE + timedelta(minutes=created_at),
                SORT_BASE + timedelta(minutes=updated_at),
            )
    finally:
        await connection.close()
    for order_by, rows in SORTED_ROWS.items():
        api_order = order_by.replace("name", field)
        listed = await client.get(path, headers=owner, params={"order_by": api_order})
        assert listed.status_code == 200, listed.text
        assert [item["id"] for item in listed.json()["items"]] == [ids[i] for i in rows], order_by


async def test_documents_sort_by_their_fields_only(client: Client) -> None:
    owner = await owner_session(client, "acme")
    project = (await client.post("/api/v1/projects", headers=owner, json={"name": "A"})).json()
    documents = f"/api/v1/projects/{project['id']}/documents"
    for order_by in ("name", "-metadata", "__class__"):
        response = await client.get(documents, headers=owner, params={"order_by": order_by})
        assert_problem(response, 422)

"""Protocol edges over HTTP: bodies that are not UTF-8 or not JSON, HEAD, OPTIONS and the
metrics content type."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from tenantry.config import Settings

from ..conftest import Client
from .identity import PASSWORD, owner_session
from .test_files import (
    CUT_OFF,
    assert_a_client_error,
    cut_off,
    live_server,
    png,
    until_found,
    upload,
)
from .test_health import assert_problem

# Valid JSON framing around bytes that are not UTF-8 (a lone 0xFF, a cut two-byte sequence).
NOT_UTF8 = b'{"tenant": "acme", "login": "\xff\xfe", "password": "pass\xc3"}'


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/auth/login"),
        ("POST", "/api/v1/auth/register"),
        ("POST", "/api/v1/auth/refresh"),
        ("POST", "/api/v1/tenants"),
        ("POST", "/api/v1/projects"),
        ("PATCH", "/api/v1/projects/{project}"),
    ],
)
async def test_a_json_body_that_is_not_utf8_is_400(client: Client, method: str, path: str) -> None:
    owner = await owner_session(client, "acme")
    created = await client.post("/api/v1/projects", headers=owner, json={"name": "Apollo"})
    assert created.status_code == 201, created.text
    response = await client.request(
        method,
        path.format(project=created.json()["id"]),
        headers={**owner, "Content-Type": "application/json"},
        content=NOT_UTF8,
    )
    problem = assert_problem(response, 400)
    assert "UTF-8" in str(problem["detail"])


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
async def test_a_json_endpoint_refuses_other_content_types(
    client: Client, content_type: str
) -> None:
    owner = await owner_session(client, "acme")
    response = await client.post(
        "/api/v1/projects",
        headers={**owner, "Content-Type": content_type},
        content=b'{"name": "Apollo"}',
    )
    problem = assert_problem(response, 415)
    assert "application/json" in str(problem["detail"])
    assert (await client.get("/api/v1/projects", headers=owner)).json()["total"] == 0


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "application/json; charset=utf-8", "application/merge-patch+json"],
)
async def test_json_and_a_missing_content_type_are_read_as_json(
    client: Client, content_type: str | None
) -> None:
    owner = await owner_session(client, "acme")
    headers = owner if content_type is None else {**owner, "Content-Type": content_type}
    response = await client.post("/api/v1/projects", headers=headers, content=b'{"name": "Apollo"}')
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/api/v1/projects", {"GET", "POST", "OPTIONS"}),
        ("/api/v1/projects/{id}", {"GET", "PATCH", "DELETE", "OPTIONS"}),
        ("/api/v1/files/{id}", {"GET", "DELETE", "OPTIONS"}),
        ("/api/v1/files/{id}/content", {"GET", "HEAD", "OPTIONS"}),
        ("/api/v1/auth/login", {"POST", "OPTIONS"}),
    ],
)
async def test_options_lists_every_method_of_the_path(
    client: Client, path: str, methods: set[str]
) -> None:
    response = await client.options(path.format(id=uuid.uuid4()))
    assert response.status_code == 204
    assert {m.strip() for m in response.headers["allow"].split(",")} == methods


def remove_stored_objects(settings: Settings) -> None:
    for stored in Path(settings.files_dir or "").rglob("*"):
        if stored.is_file():
            stored.unlink()


async def test_head_on_a_files_content_answers_gets_headers_without_reading_it(
    client: Client, settings: Settings
) -> None:
    owner = await owner_session(client, "acme")
    data = png(300, 200)
    created = await client.post("/api/v1/files", headers=owner, files=upload(data, "a b.png"))
    assert created.status_code == 201, created.text
    content = f"/api/v1/files/{created.json()['id']}/content"
    got = await client.get(content, headers=owner)
    assert got.status_code == 200

    # With its bytes gone from storage, a GET can no longer answer; HEAD needs only the row.
    remove_stored_objects(settings)
    head = await client.head(content, headers=owner)
    assert head.status_code == 200, head.text
    assert head.content == b""
    for name in ("content-length", "content-type", "etag", "accept-ranges", "content-disposition"):
        assert head.headers[name] == got.headers[name], name
    assert head.headers["content-length"] == str(len(data))

    missing = await client.head(f"/api/v1/files/{uuid.uuid4()}/content", headers=owner)
    assert missing.status_code == 404


async def test_metrics_names_one_charset(client: Client) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"


async def test_a_created_resource_is_where_location_says(client: Client) -> None:
    owner = await owner_session(client, "acme")
    project = await client.post("/api/v1/projects", headers=owner, json={"name": "A"})
    document = await client.post(
        f"{project.headers['Location']}/documents",
        headers=owner,
        json={"title": "T", "content": "c"},
    )
    user = await client.post(
        "/api/v1/users",
        headers=owner,
        json={
            "username": "mia",
            "email": "mia@acme.example",
            "password": PASSWORD,
            "roles": ["member"],
        },
    )
    for response in (project, document, user):
        assert response.status_code == 201, response.text
        found = await client.get(response.headers["Location"], headers=owner)
        assert found.status_code == 200, response.headers["Location"]
        assert found.json()["id"] == response.json()["id"]
    assert project.headers["ETag"] == '"1"'


@pytest.mark.parametrize("path", ["/api/v1/projects", "/api/v1/auth/login"])
async def test_a_json_body_cut_off_by_its_client_is_a_client_error(
    settings: Settings, clean_state: None, path: str
) -> None:
    """The connection dropped mid-body, signed in or not: logged and counted as the client's
    doing (400, `client disconnected`), never as an unhandled 500, and nothing is written."""
    async with live_server(settings) as (client, lines, port):
        owner = await owner_session(client, "acme")
        head = (
            f"POST {path} HTTP/1.1\r\nHost: tenantry\r\n"
            f"Authorization: {owner['Authorization']}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n"
        )
        await cut_off(port, head, b'{"name": "cut')
        for _ in until_found(lines, request_id=CUT_OFF, message="request"):
            await asyncio.sleep(0.02)
        listed = (await client.get("/api/v1/projects", headers=owner)).json()
    assert_a_client_error(lines)
    assert listed["items"] == []

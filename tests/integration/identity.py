"""Shared steps for identity tests over HTTP."""

from __future__ import annotations

from typing import Any

from ..conftest import Client

PASSWORD = "correct horse battery 9"


async def create_tenant(
    client: Client, slug: str, *, email: str | None = None, username: str = "olive"
) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/tenants",
        json={
            "name": slug.title(),
            "slug": slug,
            "owner": {
                "username": username,
                "email": email or f"{username}@{slug}.example",
                "password": PASSWORD,
            },
        },
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def login(
    client: Client, tenant: str, login: str, password: str = PASSWORD
) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/auth/login", json={"tenant": tenant, "login": login, "password": password}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def owner_session(client: Client, slug: str) -> dict[str, str]:
    """A tenant with its owner signed in; the owner's bearer header."""
    await create_tenant(client, slug)
    return bearer(await login(client, slug, "olive"))


async def add_user(
    client: Client, headers: dict[str, str], username: str, roles: list[str], slug: str
) -> dict[str, str]:
    response = await client.post(
        "/api/v1/users",
        headers=headers,
        json={
            "username": username,
            "email": f"{username}@{slug}.example",
            "password": PASSWORD,
            "roles": roles,
        },
    )
    assert response.status_code == 201, response.text
    return bearer(await login(client, slug, username))

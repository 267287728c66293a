"""The app under fuzzing: in process, on the session's PostgreSQL and Redis, with one signed-in
caller per identity (a tenant member, a platform superuser)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import msgspec
import pytest
import schemathesis
from litestar import Litestar
from schemathesis.python import asgi
from schemathesis.specs.openapi.schemas import OpenApiSchema

from tenantry import bootstrap
from tenantry.application.tenants import CreateSuperuser
from tenantry.config import Settings
from tenantry.presentation.app import DOCS_PATH

from ..conftest import truncate_all
from ..integration.identity import PASSWORD

SPEC_PATH = f"{DOCS_PATH}/openapi.json"
SUPERUSER_PASSWORD = "platform Secret 99"
UNLIMITED = 1_000_000

# What the check that schema-valid requests are accepted also accepts.
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429"]
# Rules the schema cannot state, so schema-valid requests can break them: password strength
# and the username, email and slug rules (422), an expiry in the past (422), task types and
# their configs (422), a NUL anywhere in free-form JSON (metadata, settings, config), which
# PostgreSQL cannot store (422), the sniffed file type (415), image size (422) and quota (413),
# a version that is stale (412) or an If-Match that disagrees with the body's version (400),
# a range of days reversed or wider than 400 (422), a webhook's URL (a host, no credentials, a
# port in range, https in production: 422), a tenant's erasure confirmed with anything but its
# slug (422).
RULES_BEYOND_THE_SCHEMA = {
    "POST /api/v1/tenants": ["422"],
    "POST /api/v1/auth/register": ["422"],
    "POST /api/v1/users": ["422"],
    "PATCH /api/v1/users/{user_id}": ["422"],
    "PATCH /api/v1/admin/tenants/{tenant_id}": ["422"],
    "POST /api/v1/auth/api-keys": ["422"],
    "POST /api/v1/tasks": ["422"],
    "POST /api/v1/files": ["413", "415", "422"],
    "POST /api/v1/projects/{project_id}/documents": ["422"],
    "PATCH /api/v1/projects/{project_id}": ["400", "412"],
    "PATCH /api/v1/projects/{project_id}/documents/{document_id}": ["400", "412", "422"],
    "POST /api/v1/webhooks": ["422"],
    "PATCH /api/v1/webhooks/{webhook_id}": ["400", "412", "422"],
    "GET /api/v1/usage": ["422"],
    "GET /api/v1/admin/usage": ["422"],
    "DELETE /api/v1/admin/tenants/{tenant_id}": ["422"],
}
# What the check that schema-violating requests are refused accepts as a refusal: its defaults
# and 413, for a body made too large to read.
REFUSED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
# Litestar converts a body to its Struct leniently (msgspec's strict=False): a boolean field
# takes 0, 1, "true" and "false" too, and a time a Unix timestamp. Where such a value is all
# that is generated wrong, the request is rightly taken.
LENIENT_CONVERSIONS = {
    "POST /api/v1/webhooks": ["201"],
    "PATCH /api/v1/webhooks/{webhook_id}": ["200"],
    "POST /api/v1/auth/api-keys": ["201"],
}

T = TypeVar("T")
Identity = dict[str, str]


def fuzz_config(*, coverage: bool) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            # The coverage phase sends each operation its boundary and wrong-typed values, the
            # same under any identity that passes the operation's guard: the superuser (owner of
            # its tenant too) passes every guard, so it alone runs them, in half the time.
            "phases": {"coverage": {"enabled": coverage}},
            # Requests carry the identity's bearer token and no generated credentials: a generated
            # X-API-Key beside it would be a second credential, refused with 401 at the door.
            "generation": {"with-security-parameters": False},
            # A task's event stream runs until the task ends, which no worker here makes happen.
            "max-stream-events": 1,
            "request-timeout": 10,
            "checks": {
                "negative_data_rejection": {"expected-statuses": REFUSED},
            },
            "operations": [
                {
                    "include-name": name,
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": ACCEPTED + statuses},
                        "negative_data_rejection": {
                            "expected-statuses": REFUSED + LENIENT_CONVERSIONS.get(name, [])
                        },
                    },
                }
                for name, statuses in RULES_BEYOND_THE_SCHEMA.items()
            ],
        }
    )


@pytest.fixture(autouse=True)
def _schemathesis_node_id(request: pytest.FixtureRequest) -> None:
    # schemathesis's lazy schema reads and rewrites ``Node._nodeid``, which pytest 9 renamed.
    request.node._nodeid = request.node.nodeid


@pytest.fixture
def fuzz_app(settings: Settings, clean_state: None) -> Iterator[Litestar]:
    """The app as schemathesis runs it: on its own event loop thread, lifespan started once.

    Every request comes from one address, so the rate limits (tests/integration/test_security.py
    has them) would soon answer everything with 429 and hide the rest of the API.
    """
    unlimited = msgspec.structs.replace(
        settings,
        login_attempts_per_account=UNLIMITED,
        login_attempts_per_address=UNLIMITED,
        register_attempts_per_address=UNLIMITED,
    )
    app = bootstrap.create_app(unlimited)
    yield app
    asgi.shutdown_lifespans()


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from these synchronous tests on a loop of its own: the session's loop
    belongs to pytest-asyncio, the app's to schemathesis."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def create_superuser(settings: Settings) -> None:
    """The superuser, made through the CLI's use case (the API has no way to make one)."""
    container = bootstrap.Container(settings)
    try:
        async with container.unit_of_work() as uow:
            await CreateSuperuser(container.identity(uow))(
                username="root", email="root@platform.example", password=SUPERUSER_PASSWORD
            )
    finally:
        await container.close()
        await container.alchemy.get_engine().dispose()


def sign_in(client: asgi.ASGIClient, tenant: str, login: str, password: str) -> str:
    """An access token."""
    response = client.post(
        "/api/v1/auth/login", json={"tenant": tenant, "login": login, "password": password}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def member_token(app: Litestar) -> str:
    """A member (no management rights) of a tenant with an owner, a project and a document."""
    with asgi.get_client(app) as client:
        created = client.post(
            "/api/v1/tenants",
            json={
                "name": "Acme",
                "slug": "acme",
                "owner": {"username": "olive", "email": "olive@acme.example", "password": PASSWORD},
            },
        )
        assert created.status_code == 201, created.text
        owner = {"Authorization": f"Bearer {sign_in(client, 'acme', 'olive', PASSWORD)}"}
        added = client.post(
            "/api/v1/users",
            headers=owner,
            json={
                "username": "mia",
                "email": "mia@acme.example",
                "password": PASSWORD,
                "roles": ["member"],
            },
        )
        assert added.status_code == 201, added.text
        project = client.post("/api/v1/projects", headers=owner, json={"name": "Apollo"})
        assert project.status_code == 201, project.text
        document = client.post(
            f"/api/v1/projects/{project.json()['id']}/documents",
            headers=owner,
            json={"title": "Plan", "content": "Land on the moon."},
        )
        assert document.status_code == 201, document.text
        return sign_in(client, "acme", "mia", PASSWORD)


@pytest.fixture(params=["member", "superuser"])
def fresh_identity(
    request: pytest.FixtureRequest, fuzz_app: Litestar, settings: Settings, database_url: str
) -> Callable[[], Identity]:
    """Makes the identity's world again from empty tables and gives its credentials: linked
    sequences each start from it, so that one sequence's leftovers cannot change what the
    next one draws."""

    def fresh() -> Identity:
        run_async(truncate_all(database_url))
        if request.param == "member":
            token = member_token(fuzz_app)
        else:
            run_async(create_superuser(settings))
            with asgi.get_client(fuzz_app) as client:
                token = sign_in(client, "platform", "root", SUPERUSER_PASSWORD)
        return {"Authorization": f"Bearer {token}"}

    return fresh


@pytest.fixture
def identity(fresh_identity: Callable[[], Identity]) -> Identity:
    """The credentials every generated request is sent with."""
    return fresh_identity()


@pytest.fixture
def api_schema(
    identity: Identity, fuzz_app: Litestar, request: pytest.FixtureRequest
) -> OpenApiSchema:
    """The served spec; depending on ``identity`` parametrizes every test using it by identity."""
    superuser = request.node.callspec.params["fresh_identity"] == "superuser"
    return schemathesis.openapi.from_asgi(
        SPEC_PATH, fuzz_app, config=fuzz_config(coverage=superuser)
    )

"""How the API answers a failed foreign key to its caller: the user deleted, or the tenant erased,
while the request ran, is a 401 (as the caller's next request is answered); any other key that
fails is a fault of ours, a 500. On one node the constraint is named in its own field; a Citus
coordinator names it, with the shard's id after it, in the message alone."""

from __future__ import annotations

import pytest
from litestar import post
from litestar.testing import create_test_client
from sqlalchemy.exc import IntegrityError

from tenantry.presentation.errors import exception_handlers


class KeyViolation(Exception):
    """What the driver raises for a failed foreign key: its SQLSTATE, constraint and message."""

    sqlstate = "23503"

    def __init__(self, message: str, constraint_name: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.constraint_name = constraint_name


def status_for(error: Exception) -> tuple[int, str]:
    @post("/api/v1/things")
    async def write() -> None:
        raise error

    with create_test_client([write], exception_handlers=exception_handlers) as client:
        answer = client.post("/api/v1/things")
    return answer.status_code, answer.headers["content-type"]


@pytest.mark.parametrize(
    "error",
    [
        KeyViolation("violates fk_projects_owner_id_users", "fk_projects_owner_id_users"),
        KeyViolation("violates fk_file_usage_tenant_id_tenants", "fk_file_usage_tenant_id_tenants"),
        KeyViolation(
            'insert or update on table "projects_102041" violates foreign key constraint '
            '"fk_projects_tenant_id_tenants_102041"',
            None,
        ),
        IntegrityError("INSERT", {}, KeyViolation("", "fk_documents_tenant_id_users_102008")),
    ],
    ids=["user", "tenant", "tenant on citus", "wrapped"],
)
def test_a_key_to_the_caller_that_failed_is_a_401(error: Exception) -> None:
    assert status_for(error) == (401, "application/problem+json")


@pytest.mark.parametrize(
    "constraint",
    ["fk_documents_tenant_id_projects", "fk_webhook_deliveries_endpoint_id_webhook_endpoints"],
)
def test_any_other_key_that_failed_is_a_500(constraint: str) -> None:
    assert status_for(KeyViolation(f"violates {constraint}", constraint)) == (
        500,
        "application/problem+json",
    )

"""Schemathesis against the app's own OpenAPI spec, in process on the real engines, as a tenant
member and as a platform superuser: no 5xx, every response as documented, every error RFC 9457
problem+json carrying its request id.

The default run is bounded (a few examples per operation, short linked sequences); the ``slow``
tests run the same properties at length.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis import Case, CheckContext, Response
from schemathesis.specs.openapi.schemas import OpenApiSchema

schema = schemathesis.pytest.from_fixture("api_schema")

PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "request_id"}
PUBLIC = [{}]
FUZZING = settings(deadline=None, suppress_health_check=list(HealthCheck))
# A sequence's later steps draw from what the database answered earlier. Each sequence starts
# from a fresh world, but ids and times differ from one run of it to the next, so a failing one
# is reported as it happened, not replayed or shrunk into a "flaky strategy" error.
LINKED = settings(FUZZING, phases=[Phase.generate], database=None)
LONG_RUN_SECONDS = 1800


def problem_details(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every error is problem+json, its status and request id those of the response."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/problem+json"), content_type
    if response.request.method == "HEAD":
        return None  # the answer to a HEAD has no body
    body = response.json()
    assert isinstance(body, dict), body
    assert body.keys() >= PROBLEM_FIELDS, body
    assert body["status"] == response.status_code, body
    assert body["request_id"] == response.headers["x-request-id"][0], body
    return None


def signed_in(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """The identity's credentials open every operation that wants some: a run that was only
    ever turned away at the door would prove nothing about the operations behind it."""
    if case.operation.definition.raw.get("security") != PUBLIC:
        assert response.status_code != 401, f"{case.operation.label}: {response.text}"
    return None


CHECKS = [problem_details, signed_in]


@schema.parametrize()
# Six per operation and identity keeps the default suite in its budget beside the Citus cluster's
# tests; the slow run below takes 200.
@settings(FUZZING, max_examples=6)
def test_every_operation_answers_as_documented(case: Case, identity: dict[str, str]) -> None:
    case.call_and_validate(headers=dict(identity), additional_checks=CHECKS)


@pytest.mark.slow
@pytest.mark.timeout(LONG_RUN_SECONDS)
@schema.parametrize()
@settings(FUZZING, max_examples=200)
def test_every_operation_answers_as_documented_at_length(
    case: Case, identity: dict[str, str]
) -> None:
    case.call_and_validate(headers=dict(identity), additional_checks=CHECKS)


def run_linked(
    api_schema: OpenApiSchema, fresh_identity: Callable[[], dict[str, str]], chosen: settings
) -> None:
    """Sequences following the links schemathesis infers from the spec (the id a create or list
    returned, used by the next get, patch, delete or nested create), each from a fresh world."""

    class Linked(api_schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            self.identity = fresh_identity()

        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"headers": dict(self.identity)}

        def validate_response(
            self, response: Response, case: Case, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            super().validate_response(response, case, additional_checks=CHECKS, **kwargs)

    Linked.run(settings=chosen)


def test_linked_operations_answer_as_documented(
    api_schema: OpenApiSchema, fresh_identity: Callable[[], dict[str, str]]
) -> None:
    chosen = settings(LINKED, max_examples=8, stateful_step_count=6)
    run_linked(api_schema, fresh_identity, chosen)


@pytest.mark.slow
@pytest.mark.timeout(LONG_RUN_SECONDS)
def test_linked_operations_answer_as_documented_at_length(
    api_schema: OpenApiSchema, fresh_identity: Callable[[], dict[str, str]]
) -> None:
    chosen = settings(LINKED, max_examples=100, stateful_step_count=15)
    run_linked(api_schema, fresh_identity, chosen)

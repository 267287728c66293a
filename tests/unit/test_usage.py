"""Usage metering's pure parts: the per-process tally, how requests are classed, the range of
days asked for and a tenant's days summed."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest

from tenantry.application.usage import Counts, Shared, UsageTally, summed, usage_range
from tenantry.domain.errors import Invalid
from tenantry.domain.tenants import Tenant, TenantStatus
from tenantry.domain.usage import (
    Counter,
    RequestClass,
    TaskUsage,
    UsageDay,
    UsageLimitReached,
    UsageLimits,
)
from tenantry.presentation.usage import request_class

from .fakes import FakeClock

TENANT, USER = uuid.uuid4(), uuid.uuid4()


def test_the_tally_counts_by_tenant_and_utc_day_until_taken() -> None:
    clock = FakeClock()
    tally = UsageTally(clock)
    tally.request(TENANT, USER, RequestClass.READ)
    tally.request(TENANT, USER, RequestClass.READ)
    tally.add(TENANT, Counter.BYTES_UPLOADED, 0)  # nothing to count
    tally.task_ran(TENANT, "noop", 0.0125)
    clock.advance(days=1)
    tally.request(TENANT, USER, RequestClass.UPLOAD)
    taken = tally.take()
    assert taken == {
        (TENANT, date(2026, 1, 1)): Counts(
            fields={"requests_read": 2, "task_runs:noop": 1, "task_ms:noop": 12}, users={USER}
        ),
        (TENANT, date(2026, 1, 2)): Counts(fields={"requests_upload": 1}, users={USER}),
    }
    assert tally.take() == {}


def test_counts_given_back_add_to_what_was_counted_since() -> None:
    tally = UsageTally(FakeClock())
    tally.add(TENANT, Counter.BYTES_DOWNLOADED, 5)
    taken = tally.take()
    other = uuid.uuid4()
    tally.add(TENANT, Counter.BYTES_DOWNLOADED, 7)
    tally.request(TENANT, other, RequestClass.WRITE)
    tally.give_back(taken)
    assert tally.take() == {
        (TENANT, date(2026, 1, 1)): Counts(
            fields={"bytes_downloaded": 12, "requests_write": 1}, users={other}
        )
    }


@pytest.mark.parametrize(
    ("method", "route", "kind"),
    [
        ("GET", "/api/v1/files", RequestClass.READ),
        ("HEAD", "/api/v1/files/{file_id:uuid}/content", RequestClass.READ),
        ("POST", "/api/v1/files", RequestClass.UPLOAD),
        ("POST", "/api/v1/tasks", RequestClass.TASK),
        ("POST", "/api/v1/tasks/{task_id:uuid}/cancel", RequestClass.WRITE),
        ("DELETE", "/api/v1/files/{file_id:uuid}", RequestClass.WRITE),
        ("PATCH", None, RequestClass.WRITE),
    ],
)
def test_requests_are_classed_by_method_and_route(
    method: str, route: str | None, kind: RequestClass
) -> None:
    assert request_class(method, route) == kind


def test_a_range_defaults_to_the_last_30_days_and_refuses_reversed_or_wide_ones() -> None:
    today = date(2026, 3, 31)
    assert usage_range(None, None, today) == (date(2026, 3, 2), today)
    assert usage_range(date(2026, 1, 1), None, today) == (date(2026, 1, 1), today)
    assert usage_range(None, date(2026, 1, 30), today) == (date(2026, 1, 1), date(2026, 1, 30))
    # Up to a day the calendar has fewer than 30 before: from its first day.
    assert usage_range(None, date(1, 1, 10), today) == (date.min, date(1, 1, 10))
    assert usage_range(None, date.min, today) == (date.min, date.min)
    with pytest.raises(Invalid, match="from must not be after to"):
        usage_range(date(2026, 2, 1), date(2026, 1, 31), today)
    assert usage_range(date(2025, 2, 25), today, today)[0] == date(2025, 2, 25)  # 400 days
    with pytest.raises(Invalid, match="At most 400 days"):
        usage_range(date(2025, 2, 24), today, today)


def test_a_tenants_days_sum_to_its_totals() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    tenant = Tenant(
        id=TENANT,
        name="Acme",
        slug="acme",
        status=TenantStatus.ACTIVE,
        settings={},
        created_at=now,
        updated_at=now,
    )
    days = [
        UsageDay(
            tenant_id=TENANT,
            day=date(2026, 1, 1),
            requests_read=3,
            requests_task=1,
            bytes_uploaded=10,
            active_users=4,
            bytes_stored_peak=100,
            bytes_stored_end=60,
            tasks={"noop": TaskUsage(runs=2, seconds=0.5)},
        ),
        UsageDay(
            tenant_id=TENANT,
            day=date(2026, 1, 2),
            requests_write=2,
            bytes_downloaded=7,
            active_users=2,
            bytes_stored_peak=80,
            bytes_stored_end=20,
            tasks={"noop": TaskUsage(runs=1, seconds=0.25), "x": TaskUsage(runs=1, seconds=1)},
        ),
    ]
    total = summed(tenant, days)
    assert (total.requests, total.requests_read, total.requests_write) == (6, 3, 2)
    assert (total.bytes_uploaded, total.bytes_downloaded) == (10, 7)
    assert (total.peak_active_users, total.task_runs, total.task_seconds) == (4, 4, 1.75)
    assert (total.peak_bytes_stored, total.bytes_stored) == (100, 20)
    assert summed(tenant, []).requests == 0


def test_a_limit_weighs_the_shared_total_and_what_the_process_counted_since() -> None:
    clock = FakeClock()
    clock.advance(hours=23, minutes=59, seconds=30)
    tally = UsageTally(clock)
    tally.limits[TENANT] = UsageLimits(requests_per_day=10, task_seconds_per_day=60)
    tally.shared[TENANT] = Shared(day=clock.now().date(), requests=8, task_ms=59_000)
    other = uuid.uuid4()
    for _ in range(20):
        tally.check(other, RequestClass.READ)  # no limits: never refused
    tally.check(TENANT, RequestClass.TASK)
    tally.request(TENANT, USER, RequestClass.READ)
    tally.task_ran(TENANT, "noop", 1.0)
    tally.check(TENANT, RequestClass.READ)
    with pytest.raises(UsageLimitReached, match="task_seconds_per_day") as task_limit:
        tally.check(TENANT, RequestClass.TASK)
    assert task_limit.value.retry_after == 30
    tally.request(TENANT, USER, RequestClass.WRITE)
    with pytest.raises(UsageLimitReached, match="requests_per_day") as refused:
        tally.check(TENANT, RequestClass.READ)
    assert refused.value.fields == {"requests_per_day": "at most 10 a day"}
    # A new day: yesterday's totals no longer count.
    clock.advance(minutes=1)
    tally.check(TENANT, RequestClass.TASK)


@pytest.mark.parametrize(
    "value",
    [
        {"requests_per_day": 0},
        {"requests_per_day": -1},
        {"requests": 5},
        [],
        "x",
        {"task_seconds_per_day": 1.5},
    ],
)
def test_limits_are_refused_unless_positive_integers_of_known_names(value: object) -> None:
    with pytest.raises(Invalid) as error:
        UsageLimits.of(value)
    assert list(error.value.fields) == ["settings.limits"]


def test_no_limits_setting_is_no_limit() -> None:
    assert not UsageLimits.of(None).any
    assert UsageLimits.of({"requests_per_day": 5}).any

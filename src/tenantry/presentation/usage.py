"""Usage metering over HTTP: how each request is classed for it, the caller's tenant's usage for
its owners and admins, and every tenant's for platform superusers (JSON or CSV)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

import msgspec
from litestar import Controller, Response, get
from litestar.di import NamedDependency, Provide
from litestar.exceptions import ValidationException
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, Reference, Schema
from litestar.params import QueryParameter

from tenantry.application.usage import ListTenantsUsage, ListUsageDays, TenantUsage, UsageSort
from tenantry.domain.auth import Actor
from tenantry.domain.usage import USAGE_DAYS_MAX, RequestClass, TaskUsage, UsageDay, UsageMeter
from tenantry.presentation.errors import PARAMETER_ERRORS, problems
from tenantry.presentation.security import SIGNED_IN_ERRORS, requires_manager, requires_superuser

# The routes whose requests are classed apart from read (GET, HEAD, OPTIONS) and write.
UPLOAD_ROUTES = frozenset({"/api/v1/files"})
TASK_ROUTES = frozenset({"/api/v1/tasks"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSV = "text/csv"


def request_class(method: str, route: str | None) -> RequestClass:
    if method in READ_METHODS:
        return RequestClass.READ
    if method == "POST" and route in UPLOAD_ROUTES:
        return RequestClass.UPLOAD
    if method == "POST" and route in TASK_ROUTES:
        return RequestClass.TASK
    return RequestClass.WRITE


class CountedRequests:
    """Each signed-in request held to its tenant's limits, then counted, by class (the
    middleware's RequestUsage port)."""

    def __init__(self, meter: UsageMeter) -> None:
        self.meter = meter

    def check(self, actor: Actor, method: str, route: str | None) -> None:
        self.meter.check(actor.tenant_id, request_class(method, route))

    def request(self, actor: Actor, method: str, route: str | None) -> None:
        self.meter.request(actor.tenant_id, actor.user_id, request_class(method, route))


From = Annotated[
    str | None,
    QueryParameter(
        name="from",
        format="date",
        max_length=10,
        description="First UTC day (YYYY-MM-DD); 29 days before `to` by default.",
    ),
]
To = Annotated[
    str | None,
    QueryParameter(
        name="to",
        format="date",
        max_length=10,
        description="Last UTC day, included (YYYY-MM-DD); today by default.",
    ),
]
Sort = Annotated[UsageSort, QueryParameter(description="The column to sort the tenants by.")]
Order = Annotated[Literal["desc", "asc"], QueryParameter(description="Sort order.")]
AnswerFormat = Annotated[
    Literal["json", "csv"], QueryParameter(name="format", description="json or csv.")
]


def day_of(value: str | None, name: str) -> date | None:
    """A query parameter's ISO day; a 422 naming it otherwise."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValidationException(
            f"Invalid query parameter {name}.",
            extra=[{"key": name, "message": "must be a date, YYYY-MM-DD", "source": "query"}],
        ) from None


class UsageDayRead(msgspec.Struct, kw_only=True):
    """One day of a tenant's usage: requests by class, bytes moved and stored, active users and
    task time."""

    example: ClassVar[dict[str, Any]] = {"tasks": {"file.inspect": {"runs": 8, "seconds": 9.5}}}

    day: date
    requests: int
    requests_read: int
    requests_write: int
    requests_upload: int
    requests_task: int
    bytes_uploaded: int
    bytes_downloaded: int
    active_users: int
    bytes_stored_peak: int
    bytes_stored_end: int
    # By task type: attempts that ended that day and the seconds their handlers ran.
    tasks: dict[str, TaskUsage]

    @classmethod
    def of(cls, day: UsageDay) -> UsageDayRead:
        values = msgspec.structs.asdict(day)
        del values["tenant_id"]
        return cls(requests=day.requests, **values)


class UsageRead(msgspec.Struct, kw_only=True):
    """A tenant's usage by day over the period asked for (days without usage left out)."""

    from_: date = msgspec.field(name="from")
    to: date
    # Days without usage are left out.
    days: list[UsageDayRead]


class TenantUsageRead(msgspec.Struct, kw_only=True):
    """One tenant's usage summed over the period."""

    tenant_id: UUID
    slug: str
    requests: int
    requests_read: int
    requests_write: int
    requests_upload: int
    requests_task: int
    bytes_uploaded: int
    bytes_downloaded: int
    peak_active_users: int
    peak_bytes_stored: int
    bytes_stored: int
    task_runs: int
    task_seconds: float


class TenantsUsageRead(msgspec.Struct, kw_only=True):
    """Every tenant's usage over the period, sorted as asked."""

    from_: date = msgspec.field(name="from")
    to: date
    tenants: list[TenantUsageRead]


CSV_COLUMNS = [field.encode_name for field in msgspec.structs.fields(TenantUsageRead)]


def as_csv(tenants: list[TenantUsage]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for usage in tenants:
        writer.writerow(getattr(usage, name) for name in CSV_COLUMNS)
    return out.getvalue()


class UsageController(Controller):
    path = "/api/v1/usage"
    tags = ["usage"]

    @get(
        summary="Your tenant's usage, per UTC day (owners and admins)",
        description="Counted as requests are answered and tasks end, folded into these days "
        f"by the worker within a minute. At most {USAGE_DAYS_MAX} days at once; `from` after "
        "`to` is 422.",
        guards=[requires_manager],
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 403),
    )
    async def get_usage(
        self,
        actor: NamedDependency[Actor],
        list_usage_days: NamedDependency[ListUsageDays],
        first: From = None,
        last: To = None,
    ) -> UsageRead:
        found = await list_usage_days(actor, day_of(first, "from"), day_of(last, "to"))
        return UsageRead(
            from_=found.first, to=found.last, days=[UsageDayRead.of(day) for day in found.days]
        )


class TenantsUsageQuery(msgspec.Struct, frozen=True):
    first: date | None
    last: date | None
    sort: UsageSort
    descending: bool


def read_tenants_usage_query(
    first: From = None, last: To = None, sort: Sort = "requests", order: Order = "desc"
) -> TenantsUsageQuery:
    """The range and order of both forms of the tenants' usage, read from the query string."""
    return TenantsUsageQuery(
        day_of(first, "from"), day_of(last, "to"), sort=sort, descending=order == "desc"
    )


@dataclass
class JsonOrCsv(Operation):
    """An operation whose 200 is JSON, or CSV when asked with format=csv: Litestar documents
    the handler's return type only."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if ok is not None and not isinstance(ok, Reference) and ok.content is not None:
            ok.content[CSV] = OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))


class AdminUsageController(Controller):
    path = "/api/v1/admin/usage"
    tags = ["platform administration"]
    guards = [requires_superuser]
    dependencies = {"usage_query": Provide(read_tenants_usage_query, sync_to_thread=False)}

    @get(
        summary="Every tenant's usage over a range of days, sorted (superusers)",
        description="JSON by default; with format=csv the same as CSV, one line per tenant "
        "under a header line of its field names, as an attachment (text/csv).",
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 403),
        operation_class=JsonOrCsv,
    )
    async def list_tenants_usage(
        self,
        actor: NamedDependency[Actor],
        list_tenants_usage: NamedDependency[ListTenantsUsage],
        usage_query: NamedDependency[TenantsUsageQuery],
        answer_format: AnswerFormat = "json",
    ) -> TenantsUsageRead:
        found = await list_tenants_usage(actor, **msgspec.structs.asdict(usage_query))
        if answer_format == "csv":
            name = f"usage-{found.first}-{found.last}.csv"
            # A response of its own: Litestar sends a returned Response as it is.
            return Response(  # type: ignore[return-value]
                as_csv(found.tenants),
                media_type=CSV,
                headers={"Content-Disposition": f'attachment; filename="{name}"'},
            )
        return TenantsUsageRead(
            from_=found.first,
            to=found.last,
            tenants=[
                msgspec.convert(usage, TenantUsageRead, from_attributes=True)
                for usage in found.tenants
            ],
        )

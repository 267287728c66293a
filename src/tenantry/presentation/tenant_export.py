"""Tenant export: the caller's tenant's rows and files as one archive, for its owners."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency

from tenantry.application.tenant_export import RequestTenantExport
from tenantry.domain.auth import Actor
from tenantry.presentation.errors import problems
from tenantry.presentation.middleware import request_id_of
from tenantry.presentation.security import SIGNED_IN_ERRORS
from tenantry.presentation.tasks import LOCATION, TaskRead, accepted


class TenantExportController(Controller):
    path = "/api/v1/tenant/export"
    tags = ["governance"]

    @post(
        status_code=202,
        response_headers=LOCATION,
        summary="Export your tenant: every row and live file, as one zip (owners)",
        description="Starts a `tenant.export` task; when it completes, its `output_files` and "
        "`result.file_id` name the archive, a file of the tenant to download as any other. "
        "Anyone but an owner: 403.",
        responses=problems(*SIGNED_IN_ERRORS, 403),
    )
    async def export_tenant(
        self,
        request: Request[Any, Any, Any],
        actor: NamedDependency[Actor],
        request_tenant_export: NamedDependency[RequestTenantExport],
    ) -> Response[TaskRead]:
        task = await request_tenant_export(actor, request_id=request_id_of(request.scope) or None)
        return accepted(task)

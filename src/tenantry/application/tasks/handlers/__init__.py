"""The built-in task handlers, one module each; a new one is one more line in BUILTIN."""

from __future__ import annotations

from tenantry.application.tasks import TaskHandler
from tenantry.application.tasks.handlers.file_inspect import FileInspect
from tenantry.application.tasks.handlers.noop import Noop
from tenantry.application.tasks.handlers.project_export import ProjectExport
from tenantry.application.tasks.handlers.tenant_export import TenantExport


def builtin_handlers() -> list[TaskHandler]:
    return [FileInspect(), ProjectExport(), Noop(), TenantExport()]

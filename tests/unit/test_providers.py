"""Use-case providers come from the route handlers' parameters and the use cases' constructors
(bootstrap/providers.py): no table to keep in step."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tenantry.application.documents import DeleteDocument
from tenantry.application.files import Files
from tenantry.application.tasks import Registry, SubmitTask
from tenantry.bootstrap import providers
from tenantry.domain.ports import Clock, UnitOfWork
from tenantry.domain.tasks import JobQueue, TaskLimits
from tenantry.presentation.app import CONTROLLERS
from tenantry.presentation.projects import ProjectController


def test_each_use_case_a_handler_names_is_found_with_its_name() -> None:
    wanted = providers.use_cases_asked_for(CONTROLLERS)
    assert wanted["delete_document"].use_case is DeleteDocument
    assert wanted["submit_task"].use_case is SubmitTask
    # The dependency's name is the handler's, not derived from the class.
    assert wanted["sign_in"].use_case.__name__ == "Login"
    # Adapters the app provides itself are not use cases.
    assert "readiness_checks" not in wanted
    assert "request_metrics" not in wanted


def test_only_the_sign_in_and_sign_up_paths_are_public() -> None:
    public = {
        name
        for name, wanted in providers.use_cases_asked_for(CONTROLLERS).items()
        if not wanted.with_actor
    }
    assert public == {"register", "sign_in", "refresh", "logout", "create_tenant"}


def test_a_controller_list_gives_only_its_own_use_cases() -> None:
    assert set(providers.use_cases_asked_for([ProjectController])) == {
        "create_project",
        "get_project",
        "list_projects",
        "update_project",
        "delete_project",
    }


def test_the_ports_come_from_the_constructor() -> None:
    assert providers.constructor_ports(SubmitTask) == {
        "uow": UnitOfWork,
        "queue": JobQueue,
        "registry": Registry,
        "limits": TaskLimits,
    }
    assert providers.constructor_ports(DeleteDocument) == {"uow": UnitOfWork, "clock": Clock}


class Unwirable:
    def __init__(self, uow: UnitOfWork, window: timedelta) -> None:
        self.uow, self.window = uow, window


class WithADefault:
    def __init__(self, files: Files, window: timedelta = timedelta(seconds=1)) -> None:
        self.files, self.window = files, window


def test_a_required_port_nobody_provides_is_named_at_start_up() -> None:
    with pytest.raises(TypeError, match=r"Unwirable: no provider knows the port window"):
        providers.constructor_ports(Unwirable)
    assert providers.constructor_ports(WithADefault) == {"files": Files}

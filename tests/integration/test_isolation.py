"""Isolation as a property: two tenants doing random work through the HTTP API never see each
other's data, and every cross-tenant id answers 404.

CI runs a bounded number of examples; ``pytest -m slow`` runs many more.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, ClassVar

import msgspec
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from litestar import Litestar
from litestar.testing import TestClient

from tenantry import bootstrap
from tenantry.config import Settings

PASSWORD = "correct horse battery 9"
TENANTS = ("a", "b")
names = st.text(alphabet="abcdefghij klmnop", min_size=1, max_size=12).map(str.strip).filter(bool)


class TwoTenants(RuleBasedStateMachine):
    client: ClassVar[TestClient[Litestar]]

    projects = Bundle("projects")
    documents = Bundle("documents")

    def __init__(self) -> None:
        super().__init__()
        self.headers: dict[str, dict[str, str]] = {}
        # The model: what each tenant should see.
        self.live: dict[str, dict[str, str]] = {tenant: {} for tenant in TENANTS}
        self.live_documents: dict[str, set[str]] = {}

    @initialize()
    def sign_up(self) -> None:
        for tenant in TENANTS:
            slug = f"iso-{tenant}-{uuid.uuid4().hex[:10]}"
            owner = {"username": "olive", "email": f"olive@{slug}.example", "password": PASSWORD}
            created = self.client.post(
                "/api/v1/tenants", json={"name": slug, "slug": slug, "owner": owner}
            )
            assert created.status_code == 201, created.text
            login = self.client.post(
                "/api/v1/auth/login", json={"tenant": slug, "login": "olive", "password": PASSWORD}
            )
            self.headers[tenant] = {"Authorization": f"Bearer {login.json()['access_token']}"}

    def other(self, tenant: str) -> str:
        return "b" if tenant == "a" else "a"

    def marked(self, tenant: str, name: str) -> str:
        # Every name carries its tenant's mark, so a leak shows up in any response body.
        return f"[{tenant}] {name}"

    @rule(target=projects, tenant=st.sampled_from(TENANTS), name=names)
    def create_project(self, tenant: str, name: str) -> tuple[str, str]:
        response = self.client.post(
            "/api/v1/projects",
            headers=self.headers[tenant],
            json={"name": self.marked(tenant, name)},
        )
        assert response.status_code == 201, response.text
        project = response.json()
        self.live[tenant][project["id"]] = project["name"]
        return tenant, project["id"]

    @rule(target=documents, project=projects, title=names)
    def create_document(self, project: tuple[str, str], title: str) -> tuple[str, str, str]:
        tenant, project_id = project
        response = self.client.post(
            f"/api/v1/projects/{project_id}/documents",
            headers=self.headers[tenant],
            json={"title": self.marked(tenant, title), "content": self.marked(tenant, "body")},
        )
        if project_id not in self.live[tenant]:
            assert response.status_code == 404
            return tenant, project_id, ""
        assert response.status_code == 201, response.text
        document_id = response.json()["id"]
        self.live_documents[document_id] = {tenant}
        return tenant, project_id, document_id

    @rule(project=projects)
    def read_own_project(self, project: tuple[str, str]) -> None:
        tenant, project_id = project
        response = self.client.get(f"/api/v1/projects/{project_id}", headers=self.headers[tenant])
        if project_id in self.live[tenant]:
            assert response.status_code == 200
            assert response.json()["name"] == self.live[tenant][project_id]
        else:
            assert response.status_code == 404

    @rule(
        project=projects, method=st.sampled_from(["get", "patch", "delete", "list_docs", "add_doc"])
    )
    def touch_another_tenants_project(self, project: tuple[str, str], method: str) -> None:
        tenant, project_id = project
        intruder = self.headers[self.other(tenant)]
        path = f"/api/v1/projects/{project_id}"
        calls: dict[str, Any] = {
            "get": lambda: self.client.get(path, headers=intruder),
            "patch": lambda: self.client.patch(path, headers=intruder, json={"name": "stolen"}),
            "delete": lambda: self.client.delete(path, headers=intruder),
            "list_docs": lambda: self.client.get(f"{path}/documents", headers=intruder),
            "add_doc": lambda: self.client.post(
                f"{path}/documents", headers=intruder, json={"title": "x", "content": "y"}
            ),
        }
        response = calls[method]()
        assert response.status_code == 404, (method, response.text)
        assert f"[{tenant}]" not in response.text

    @rule(document=documents)
    def touch_another_tenants_document(self, document: tuple[str, str, str]) -> None:
        tenant, project_id, document_id = document
        if not document_id:
            return
        intruder = self.headers[self.other(tenant)]
        path = f"/api/v1/projects/{project_id}/documents/{document_id}"
        for response in (
            self.client.get(path, headers=intruder),
            self.client.patch(path, headers=intruder, json={"title": "stolen"}),
            self.client.delete(path, headers=intruder),
        ):
            assert response.status_code == 404
            assert f"[{tenant}]" not in response.text

    @rule(project=projects, name=names)
    def rename_own_project(self, project: tuple[str, str], name: str) -> None:
        tenant, project_id = project
        response = self.client.patch(
            f"/api/v1/projects/{project_id}",
            headers=self.headers[tenant],
            json={"name": self.marked(tenant, name)},
        )
        if project_id in self.live[tenant]:
            assert response.status_code == 200
            self.live[tenant][project_id] = response.json()["name"]
        else:
            assert response.status_code == 404

    @rule(project=consumes(projects))
    def delete_own_project(self, project: tuple[str, str]) -> None:
        tenant, project_id = project
        response = self.client.delete(
            f"/api/v1/projects/{project_id}", headers=self.headers[tenant]
        )
        assert response.status_code == (204 if project_id in self.live[tenant] else 404)
        self.live[tenant].pop(project_id, None)

    @rule(tenant=st.sampled_from(TENANTS), q=st.none() | st.sampled_from(["a", "b", "[", "x"]))
    def list_projects(self, tenant: str, q: str | None) -> None:
        params = {"limit": 100} | ({"q": q} if q else {})
        response = self.client.get("/api/v1/projects", headers=self.headers[tenant], params=params)
        assert response.status_code == 200
        body = response.json()
        ids = {item["id"] for item in body["items"]}
        assert ids <= set(self.live[tenant]), "a listing showed a project this tenant does not own"
        if q is None:
            assert ids == set(self.live[tenant])
            assert body["total"] == len(self.live[tenant])
        assert f"[{self.other(tenant)}]" not in response.text

    @invariant()
    def users_stay_apart(self) -> None:
        if not self.headers:
            return
        for tenant in TENANTS:
            users = self.client.get("/api/v1/users", headers=self.headers[tenant]).json()
            assert users["total"] == 1


@pytest.mark.parametrize(
    "examples",
    [
        pytest.param(int(os.environ.get("TENANTRY_ISOLATION_EXAMPLES", "8")), id="bounded"),
        pytest.param(200, id="long", marks=pytest.mark.slow),
    ],
)
def test_tenants_never_see_each_other(settings: Settings, clean_state: None, examples: int) -> None:
    # Every example signs up two tenants from one address: lift the sign-up limits.
    unlimited = msgspec.structs.replace(
        settings, register_attempts_per_address=1_000_000, login_attempts_per_address=1_000_000
    )
    with TestClient(app=bootstrap.create_app(unlimited)) as client:
        TwoTenants.client = client
        run_state_machine_as_test(
            TwoTenants,
            settings=hypothesis_settings(
                max_examples=examples,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )

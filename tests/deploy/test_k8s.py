"""deploy/k8s: manifests valid against Kubernetes' own schemas, and wired to each other."""

from __future__ import annotations

import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tenantry.config import load_settings

from .stack import DEPLOY, load_yaml, load_yaml_documents, tool

K8S = DEPLOY / "k8s"
# The oldest Kubernetes still widely run that these manifests must work on.
KUBERNETES_VERSION = "1.30"


def resources() -> list[dict[str, Any]]:
    listed = load_yaml(K8S / "kustomization.yaml")["resources"]
    return [document for name in listed for document in load_yaml_documents(K8S / name)]


def one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [r for r in resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return dict(workload["spec"]["template"]["spec"])


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod_spec(workload)["containers"]
    return dict(only)


def test_the_kustomization_lists_every_manifest() -> None:
    listed = set(load_yaml(K8S / "kustomization.yaml")["resources"])
    present = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_every_manifest_is_valid_kubernetes() -> None:
    for resource in resources():
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_strict_validation_catches_a_misspelt_field() -> None:
    api = one("Deployment", "tenantry-api")
    api["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = api["spec"]["template"][
        "spec"
    ]["containers"][0].pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(api, KUBERNETES_VERSION, strict=True)


def test_the_stack_has_its_parts() -> None:
    kinds = {(r["kind"], r["metadata"]["name"]) for r in resources()}
    assert kinds == {
        ("Namespace", "tenantry"),
        ("ConfigMap", "tenantry-config"),
        ("Secret", "tenantry-secrets"),
        ("Job", "tenantry-migrate"),
        ("Deployment", "tenantry-api"),
        ("Service", "tenantry-api"),
        ("HorizontalPodAutoscaler", "tenantry-api"),
        ("PodDisruptionBudget", "tenantry-api"),
        ("Deployment", "tenantry-worker"),
    }


def test_api_probes_liveness_on_health_and_readiness_on_ready() -> None:
    api = container(one("Deployment", "tenantry-api"))
    ports = {port["name"]: port["containerPort"] for port in api["ports"]}
    assert ports == {"http": 8000}
    assert api["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    # /ready answers within 2 s even when a dependency hangs.
    assert api["readinessProbe"]["timeoutSeconds"] >= 2
    assert api["args"] == ["serve"]


def test_workloads_run_as_non_root_with_limits() -> None:
    for resource in resources():
        if resource["kind"] not in {"Deployment", "Job"}:
            continue
        name = resource["metadata"]["name"]
        spec = pod_spec(resource)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == 10001, name
        assert spec["automountServiceAccountToken"] is False, name
        for each in spec["containers"]:
            assert each["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert each["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert each["securityContext"]["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= set(each["resources"]["limits"]), name
            assert {"cpu", "memory"} <= set(each["resources"]["requests"]), name
            mounts = {mount["mountPath"] for mount in each.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{name}: a read-only root needs a writable /tmp"
            assert each["image"] == "tenantry", name
            refs = [
                ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in each["envFrom"]
            ]
            assert refs == ["tenantry-config", "tenantry-secrets"], name


def test_prometheus_scrapes_the_api_and_the_workers_where_they_serve() -> None:
    for name, port in (("tenantry-api", 8000), ("tenantry-worker", 9100)):
        workload = one("Deployment", name)
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/port"] == str(port), name
        assert annotations["prometheus.io/path"] == "/metrics", name
        assert port in {p["containerPort"] for p in container(workload)["ports"]}, name
    worker = container(one("Deployment", "tenantry-worker"))
    assert worker["args"] == ["worker"]
    assert worker["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}


def test_the_autoscaler_scales_the_api_on_cpu() -> None:
    hpa = one("HorizontalPodAutoscaler", "tenantry-api")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "tenantry-api",
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert "replicas" not in one("Deployment", "tenantry-api")["spec"], "the HPA owns the count"


def test_service_and_disruption_budget_select_the_api_pods() -> None:
    api = one("Deployment", "tenantry-api")
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert api["spec"]["selector"]["matchLabels"] == labels
    service = one("Service", "tenantry-api")
    assert service["spec"]["selector"] == labels
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    budget = one("PodDisruptionBudget", "tenantry-api")
    assert budget["spec"]["selector"]["matchLabels"] == labels
    assert (
        budget["spec"]["minAvailable"]
        < one("HorizontalPodAutoscaler", "tenantry-api")["spec"]["minReplicas"]
    )
    worker = one("Deployment", "tenantry-worker")
    assert worker["spec"]["template"]["metadata"]["labels"] != labels


def test_the_migrate_job_upgrades_the_database_once() -> None:
    job = one("Job", "tenantry-migrate")
    assert container(job)["args"] == ["db", "upgrade"]
    assert pod_spec(job)["restartPolicy"] == "Never"


def test_config_and_secret_are_settings_the_app_accepts() -> None:
    config = one("ConfigMap", "tenantry-config")["data"]
    secret = one("Secret", "tenantry-secrets")["stringData"]
    assert not set(config) & set(secret)
    for key in config:
        assert not any(word in key for word in ("PASSWORD", "SECRET", "TOKEN")), key
    settings = load_settings(environ={**config, **secret}, env_file=None)
    assert settings.is_production
    assert settings.host == "0.0.0.0"
    assert settings.vault_addr is not None
    assert settings.database_url is not None
    assert settings.database_url.startswith("postgresql://tenantry_app@")
    assert settings.worker_metrics_port == 9100


def test_kustomize_renders_the_manifests_with_the_release_image() -> None:
    kubectl = tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert len(rendered) == len(resources())
    images = {
        c["image"]
        for doc in rendered
        if doc["kind"] in {"Deployment", "Job"}
        for c in doc["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"registry.example.com/tenantry:0.1.0"}
    assert {doc["metadata"].get("namespace") for doc in rendered if doc["kind"] != "Namespace"} == {
        "tenantry"
    }

"""deploy/prometheus: promtool accepts the configuration and the rules, the alerts fire when they
should (promtool's rule unit tests), and every series they read is one the stack exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .metric_names import APP, EXPORTED, TARGET_LABELS
from .promql import selectors
from .stack import DEPLOY, ROOT, load_yaml, services, tool

PROMETHEUS = DEPLOY / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
ALERTS = PROMETHEUS / "alerts.yml"
ALERT_TESTS = PROMETHEUS / "alerts.test.yml"


def promtool() -> str:
    found = tool("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return found


def run_promtool(*args: str | Path) -> None:
    result = subprocess.run([promtool(), *map(str, args)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def test_promtool_accepts_the_configuration() -> None:
    run_promtool("check", "config", CONFIG)


def test_promtool_accepts_the_rules() -> None:
    run_promtool("check", "rules", ALERTS)


def test_alerts_fire_on_their_unit_tests() -> None:
    run_promtool("test", "rules", ALERT_TESTS)


def test_every_alert_is_shown_firing_by_a_unit_test() -> None:
    tested = {
        check["alertname"]
        for case in load_yaml(ALERT_TESTS)["tests"]
        for check in case["alert_rule_test"]
        if check.get("exp_alerts")
    }
    assert tested == set(alerts())


def test_the_alerts_cover_errors_latency_jobs_backlog_and_targets() -> None:
    by_name = alerts()
    assert {
        "TenantryApiHighErrorRate", "TenantryApiHighLatencyP95", "TenantryJobsFailing",
        "TenantryQueueBacklog", "TenantryTargetDown",
    } <= set(by_name)  # fmt: skip
    assert "tenantry_http_errors_total" in by_name["TenantryApiHighErrorRate"]["expr"]
    assert "histogram_quantile(0.95" in by_name["TenantryApiHighLatencyP95"]["expr"]
    assert "tenantry_jobs_failed_total" in by_name["TenantryJobsFailing"]["expr"]
    assert "tenantry_queue_depth" in by_name["TenantryQueueBacklog"]["expr"]
    assert by_name["TenantryTargetDown"]["expr"].strip() == "up == 0"


def test_every_alert_says_how_bad_and_where_to_read_more() -> None:
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["description"], name
        assert rule["annotations"]["runbook"] == "docs/operations.md#alerts", name
        assert re.fullmatch(r"\d+m", rule["for"]), name


def test_every_alert_is_explained_in_the_operations_guide() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    section = guide.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    for name in alerts():
        assert f"`{name}`" in section, f"docs/operations.md, Alerts, says nothing of {name}"


def test_rules_read_only_exported_series_and_labels() -> None:
    for rule in rules():
        for selector in selectors(rule["expr"]):
            assert selector.name in EXPORTED, f"{rule['alert']}: {selector.name} is not exported"
            if selector.name in APP:
                unknown = selector.labels - APP[selector.name]
                assert not unknown, f"{rule['alert']}: {selector.name} has no label {unknown}"


def test_metric_names_are_checked_against_the_app() -> None:
    """The exported set is the app's real metric objects, not a copy that could drift."""
    assert APP["tenantry_http_requests_total"] == {"method", "route", "status"} | TARGET_LABELS
    assert APP["tenantry_job_duration_seconds_bucket"] == {"task_type", "le"} | TARGET_LABELS
    assert APP["tenantry_queue_depth"] == {"state"} | TARGET_LABELS
    assert "tenantry_http_requests" not in EXPORTED


def scrape_targets() -> dict[str, list[tuple[str, int]]]:
    targets: dict[str, list[tuple[str, int]]] = {}
    for job in load_yaml(CONFIG)["scrape_configs"]:
        found = targets.setdefault(job["job_name"], [])
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                found.append((host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            found.extend((name, int(dns["port"])) for name in dns["names"])
    return targets


def test_every_exporter_of_the_stack_is_scraped() -> None:
    assert set(scrape_targets()) == {"api", "worker", "postgres", "redis", "cadvisor", "prometheus"}


def test_scrape_targets_are_the_services_and_ports_compose_runs() -> None:
    """Each target is a compose service, on the port its own health check probes."""
    every = services()
    for job, targets in scrape_targets().items():
        for host, port in targets:
            service = "prometheus" if host == "localhost" else host
            assert service in every, f"job {job}: no service {host}"
            check = " ".join(every[service]["healthcheck"]["test"])
            assert f":{port}/" in check, f"job {job}: {service} is not checked on port {port}"


def test_the_api_is_scraped_where_it_serves_metrics() -> None:
    config = load_yaml(CONFIG)
    api = next(job for job in config["scrape_configs"] if job["job_name"] == "api")
    assert api.get("metrics_path", "/metrics") == "/metrics"
    assert config["global"]["scrape_interval"] == "5s"
    assert config["rule_files"] == ["alerts.yml"]

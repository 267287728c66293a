"""deploy/grafana: provisioning that finds the dashboards and Prometheus, and dashboards whose
every query reads series the stack exports."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .metric_names import APP, EXPORTED
from .promql import GRAFANA_VARIABLES, selectors
from .stack import DEPLOY, ROOT, dashboards, load_yaml, services, tool

GRAFANA = DEPLOY / "grafana"
DATASOURCE = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"


def panels() -> list[tuple[str, dict[str, Any]]]:
    return [(file, panel) for file, board in dashboards().items() for panel in board["panels"]]


def expressions() -> list[tuple[str, str]]:
    return [
        (f"{file}: {panel['title']}", target["expr"])
        for file, panel in panels()
        for target in panel["targets"]
    ]


def datasource() -> dict[str, Any]:
    (only,) = load_yaml(DATASOURCE)["datasources"]
    return dict(only)


def test_the_datasource_is_the_stacks_prometheus_at_five_seconds() -> None:
    source = datasource()
    assert source["type"] == "prometheus"
    assert source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in services()
    assert source["jsonData"]["timeInterval"] == "5s"
    scrape = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")["global"]["scrape_interval"]
    assert scrape == source["jsonData"]["timeInterval"]


def test_dashboards_are_provisioned_from_where_compose_mounts_them() -> None:
    (provider,) = load_yaml(PROVIDERS)["providers"]
    mounts = {
        volume.split(":")[0]: volume.split(":")[1]
        for volume in services()["grafana"]["volumes"]
        if volume.startswith("./")
    }
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    home = services()["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (GRAFANA / "dashboards" / Path(home).relative_to(provider["options"]["path"])).is_file()


def test_three_dashboards_refreshing_every_five_seconds() -> None:
    boards = dashboards()
    assert set(boards) == {"api.json", "system.json", "jobs.json"}
    assert len({board["uid"] for board in boards.values()}) == 3
    for file, board in boards.items():
        assert board["refresh"] == "5s", file
        assert board["description"], file
        assert board["panels"], file


def test_every_panel_is_described_and_queries_the_provisioned_datasource() -> None:
    uid = datasource()["uid"]
    for file, panel in panels():
        where = f"{file}: {panel.get('title')}"
        assert panel.get("title"), where
        assert len(panel.get("description", "")) >= 20, f"{where} has no description"
        assert panel["datasource"]["uid"] == uid, where
        assert panel["targets"], where
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, where


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    for file, board in dashboards().items():
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), file
        taken: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            box = panel["gridPos"]
            assert box["x"] + box["w"] <= 24, f"{file}: {panel['title']}"
            cells = {
                (x, y)
                for x in range(box["x"], box["x"] + box["w"])
                for y in range(box["y"], box["y"] + box["h"])
            }
            assert not cells & taken, f"{file}: {panel['title']} overlaps another panel"
            taken |= cells


def test_every_query_reads_exported_series_and_labels() -> None:
    for where, expression in expressions():
        for selector in selectors(expression):
            assert selector.name in EXPORTED, f"{where}: {selector.name} is not exported"
            if selector.name in APP:
                unknown = selector.labels - APP[selector.name]
                assert not unknown, f"{where}: {selector.name} has no label {unknown}"


def test_prometheus_parses_every_query(tmp_path: Path) -> None:
    """promtool holds Prometheus' own parser: every query, as a recording rule."""
    promtool = tool("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    recorded = []
    for number, (_, expression) in enumerate(expressions()):
        for variable in GRAFANA_VARIABLES:
            expression = expression.replace(variable, "1m")
        recorded.append({"record": f"dashboard:query:{number}", "expr": expression})
    rules = tmp_path / "dashboards.rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": recorded}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def series_of(file: str) -> set[str]:
    board = dashboards()[file]
    return {
        selector.name
        for panel in board["panels"]
        for target in panel["targets"]
        for selector in selectors(target["expr"])
    }


def test_api_dashboard_shows_rate_latency_errors_and_in_flight() -> None:
    assert {
        "tenantry_http_requests_total",
        "tenantry_http_request_duration_seconds_bucket",
        "tenantry_http_errors_total",
        "tenantry_http_requests_in_progress",
    } <= series_of("api.json")
    titles = {panel["title"] for panel in dashboards()["api.json"]["panels"]}
    assert {"Requests/s by route", "Latency p50 / p95 / p99", "Errors/s by status class"} <= titles


def test_jobs_dashboard_shows_queue_durations_outcomes_and_utilisation() -> None:
    assert {
        "tenantry_queue_depth",
        "tenantry_job_duration_seconds_sum",
        "tenantry_job_duration_seconds_count",
        "tenantry_job_duration_seconds_bucket",
        "tenantry_jobs_succeeded_total",
        "tenantry_jobs_failed_total",
        "tenantry_worker_concurrency_in_use",
        "tenantry_worker_concurrency_limit",
    } <= series_of("jobs.json")


def test_system_dashboard_shows_cpu_memory_disk_and_network_per_container() -> None:
    shown = series_of("system.json")
    assert {
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_fs_reads_bytes_total",
        "container_fs_writes_bytes_total",
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
    } <= shown
    assert "cadvisor" in services()


def test_every_dashboard_is_described_in_the_operations_guide() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    section = guide.split("\n## Dashboards\n", 1)[1].split("\n## ", 1)[0]
    for board in dashboards().values():
        assert board["title"] in section, f"docs/operations.md, Dashboards, skips {board['title']}"

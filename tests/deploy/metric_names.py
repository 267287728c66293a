"""The series the compose stack exports: every name an alert or a dashboard may query, with the
labels each carries. Kept here and nowhere else.

The app's series come from its own metric objects (tenantry.infrastructure.observability.metrics),
so renaming a metric or a label there fails the deploy tests until the alerts and dashboards
follow. The exporters' series are listed by hand, only those the stack queries, as their
sources name them: postgres_exporter (collector/pg_stat_database.go, pg_database.go, the
pg_settings_* of its server settings), redis_exporter (exporter/exporter.go's INFO maps) and
cAdvisor's container_* series.
"""

from __future__ import annotations

from prometheus_client.metrics import MetricWrapperBase

from tenantry.infrastructure.observability import metrics as app_metrics

# Prometheus adds these to every series it scrapes.
TARGET_LABELS = frozenset({"job", "instance"})


def _series(metric: MetricWrapperBase) -> dict[str, frozenset[str]]:
    """The names a metric object is exposed under, as prometheus_client writes them
    (``_created`` series are off: the module disables them)."""
    name, kind = metric._name, metric._type
    labels = frozenset(metric._labelnames) | TARGET_LABELS
    if kind == "counter":
        return {f"{name}_total": labels}
    if kind == "gauge":
        return {name: labels}
    if kind == "histogram":
        return {
            f"{name}_bucket": labels | {"le"},
            f"{name}_sum": labels,
            f"{name}_count": labels,
        }
    raise AssertionError(f"{name} is a {kind}: tell metric_names.py the series it exposes")


APP: dict[str, frozenset[str]] = {
    series: labels
    for metric in vars(app_metrics).values()
    if isinstance(metric, MetricWrapperBase)
    for series, labels in _series(metric).items()
}

POSTGRES_EXPORTER = frozenset(
    {
        "pg_up",
        "pg_settings_max_connections",
        "pg_database_size_bytes",
        "pg_stat_database_numbackends",
        "pg_stat_database_xact_commit",
        "pg_stat_database_xact_rollback",
        "pg_stat_database_blks_hit",
        "pg_stat_database_blks_read",
    }
)
REDIS_EXPORTER = frozenset(
    {
        "redis_up",
        "redis_memory_used_bytes",
        "redis_memory_max_bytes",
        "redis_connected_clients",
        "redis_commands_processed_total",
    }
)
CADVISOR = frozenset(
    {
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_spec_memory_limit_bytes",
        "container_fs_reads_bytes_total",
        "container_fs_writes_bytes_total",
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
    }
)
# Prometheus' own series for every target.
PROMETHEUS = frozenset({"up"})

EXPORTED: frozenset[str] = (
    frozenset(APP) | POSTGRES_EXPORTER | REDIS_EXPORTER | CADVISOR | PROMETHEUS
)

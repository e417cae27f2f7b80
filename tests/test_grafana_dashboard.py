"""deploy/grafana: the dashboard's structure, and every PromQL expression in it parses.

The expressions are also run against a real Prometheus scraping a real daemon in
tests/test_prometheus.py.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import yaml

from tests.prometheus_tools import (
    GRAFANA_BUILTINS,
    dashboard_targets,
    exported_metric_names,
    load_dashboard,
    needs_promtool,
    plain_promql,
    promtool,
    unknown_metrics,
)

PANEL_TYPES = {"stat", "timeseries", "bargauge", "table", "row"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def test_dashboard_is_an_importable_grafana_dashboard() -> None:
    """Title, uid, schema version, a Prometheus data source variable and an instance filter."""
    dashboard = load_dashboard()
    assert dashboard["uid"] == "c66-archiver"
    assert dashboard["title"]
    assert dashboard["schemaVersion"] >= 36
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["datasource"] == DATASOURCE
    assert variables["instance"]["includeAll"] is True


def test_panels_have_unique_ids_fit_the_grid_and_do_not_overlap() -> None:
    """Every panel has a known type, a title, a description and a place on the 24-column grid."""
    panels = load_dashboard()["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["type"] in PANEL_TYPES, panel["title"]
        assert panel["title"]
        assert panel["description"]
        assert panel["datasource"] == DATASOURCE, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0, panel["title"]  # noqa: PT018
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    for first, second in itertools.combinations(panels, 2):
        assert not _overlap(first["gridPos"], second["gridPos"]), (first["title"], second["title"])


def _overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def test_every_query_has_a_ref_id_and_uses_only_defined_variables() -> None:
    """Queries are Prometheus queries with unique refIds; every `$variable` is defined."""
    dashboard = load_dashboard()
    defined = {f"${variable['name']}" for variable in dashboard["templating"]["list"]}
    by_panel: dict[int, list[str]] = {}
    for panel, target in dashboard_targets(dashboard):
        by_panel.setdefault(panel["id"], []).append(target["refId"])
        assert target["datasource"] == DATASOURCE, panel["title"]
        used = set(re.findall(r"\$\{?(\w+)", target["expr"]))
        unknown = {f"${name}" for name in used} - defined - set(GRAFANA_BUILTINS)
        assert not unknown, (panel["title"], unknown)
    assert all(len(refs) == len(set(refs)) for refs in by_panel.values())


def test_dashboard_covers_freshness_volume_duration_failures_the_api_and_the_watch(
    tmp_path: Path,
) -> None:
    """The panels the operator needs are there, and use only metrics the daemon exports."""
    exported = exported_metric_names(tmp_path)
    expressions = [target["expr"] for _, target in dashboard_targets(load_dashboard())]
    for expression in expressions:
        assert unknown_metrics(expression, exported) == set(), expression
    used = " ".join(expressions)
    for metric in (
        "c66_archiver_stack_last_success_timestamp_seconds",
        "c66_archiver_backups_archived_total",
        "c66_archiver_bytes_archived_total",
        "c66_archiver_transfer_duration_seconds_bucket",
        "c66_archiver_backups_failed_total",
        "c66_archiver_api_requests_total",
        "c66_archiver_request_budget_remaining",
        # The watch over Cloud 66.
        "c66_archiver_missed_backups_unacknowledged",
        "c66_archiver_series_late",
        "c66_archiver_series_upstream_failed",
        "c66_archiver_series_size_anomaly",
        "c66_archiver_series_newest_backup_timestamp_seconds",
        "c66_archiver_series_late_after_seconds",
        "c66_archiver_series_last_size_bytes",
        "c66_archiver_series_typical_size_bytes",
    ):
        assert metric in used, metric


@needs_promtool
def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    """Each query, as Prometheus gets it from Grafana, passes `promtool check rules`."""
    rules = [
        {"record": f"dashboard:panel{panel['id']}_{target['refId']}", "expr": plain_promql(expr)}
        for panel, target in dashboard_targets(load_dashboard())
        if (expr := target["expr"])
    ]
    path = tmp_path / "dashboard-expressions.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout

"""Shared by the alert-rule, dashboard and Prometheus tests: promtool, metric names, Grafana.

Run `promtool` on files; list the metric names the daemon exports; turn the
dashboard's expressions into plain PromQL (Grafana's variables substituted).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from archiver.cloud66.budget import RequestBudget
from archiver.service.metrics import Metrics
from archiver.state.records import RunRecord, VerifyRun
from archiver.state.store import StateStore
from tests.conftest import REPO_ROOT

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (scripts/test.sh installs prometheus)"
)
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus is not installed (scripts/test.sh installs it)"
)

RULES = REPO_ROOT / "deploy" / "prometheus" / "c66-archiver.rules.yml"
# Minute-scale cases, and the ones about days (evaluated hourly: promtool is slow otherwise).
RULE_TESTS = (
    REPO_ROOT / "deploy" / "prometheus" / "c66-archiver.rules.test.yml",
    REPO_ROOT / "deploy" / "prometheus" / "c66-archiver.rules.days.test.yml",
)
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "c66-archiver.json"
JOB = "c66-archiver"

_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_METRIC_NAME = re.compile(r"\b((?:c66_archiver|process)_[a-z0-9_]+)\b")
# Grafana's variables, replaced with what Prometheus understands.
GRAFANA_BUILTINS = {"$__rate_interval": "5m", "$__interval": "5m", "$__range": "1d"}


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool; the result, with output for assertion messages."""
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def exported_metric_names(tmp_path: Path) -> set[str]:
    """Every metric family a daemon exports once a pass succeeded, from its own registry."""
    state = StateStore.open(tmp_path / "names-state")
    try:
        now = datetime.now(UTC).isoformat()
        state.runs.record(RunRecord(now, now, True, 1, 0, [], 1))
        state.runs.record_stack_success("stack-a", datetime.now(UTC))
        state.verifications.record([], VerifyRun(now, checked=1, failed=0))
        metrics = Metrics()
        metrics.bind(state, RequestBudget(3000))
        text = metrics.render().decode()
    finally:
        state.close()
    return set(re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE))


def unknown_metrics(expression: str, exported: set[str]) -> set[str]:
    """Metric names in `expression` the daemon does not export."""
    unknown = set()
    for name in _METRIC_NAME.findall(expression):
        base = next((name.removesuffix(s) for s in _HISTOGRAM_SUFFIXES if name.endswith(s)), name)
        if name not in exported and base not in exported:
            unknown.add(name)
    return unknown


def load_dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def dashboard_targets(dashboard: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query of every panel, rows' nested panels included."""
    found = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            found.extend((inner, target) for target in inner.get("targets", []))
    return found


def plain_promql(expression: str, *, instance: str = ".*", window: str | None = None) -> str:
    """The expression with Grafana's variables replaced (`window` for the range ones)."""
    replacements = dict(GRAFANA_BUILTINS)
    if window is not None:
        replacements.update({"$__rate_interval": window, "$__interval": window})
    # Longest first: `$__rate_interval` before anything that is a prefix of it.
    for variable in sorted(replacements, key=len, reverse=True):
        expression = expression.replace(variable, replacements[variable])
    return expression.replace("${instance}", instance).replace("$instance", instance)

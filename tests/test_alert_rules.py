"""deploy/prometheus: the alert rules, checked and unit-tested by Prometheus' own promtool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.prometheus_tools import (
    RULE_TESTS,
    RULES,
    exported_metric_names,
    needs_promtool,
    promtool,
    unknown_metrics,
)

# What the issue asks the rules to cover, by alert name.
EXPECTED_ALERTS = {
    "C66ArchiverBackupsStale",  # no good pass for longer than max_age
    "C66ArchiverNeverSucceeded",  # ... and the gauge absent since the start
    "C66ArchiverStackStale",
    "C66ArchiverLastPassFailed",
    "C66ArchiverVerifyFailures",
    "C66ArchiverVerifyOverdue",
    "C66ArchiverThrottled",
    "C66ArchiverRequestBudgetLow",
    "C66ArchiverDown",
    "C66ArchiverMissing",
    # The watch over Cloud 66.
    "C66ArchiverMissedBackups",
    "C66ArchiverBackupLate",
    "C66ArchiverUpstreamBackupFailed",
    "C66ArchiverBackupShrank",
}


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _rule_cases() -> list[dict[str, Any]]:
    documents = [yaml.safe_load(path.read_text()) for path in RULE_TESTS]
    return [case for doc in documents for test in doc["tests"] for case in test["alert_rule_test"]]


@needs_promtool
def test_promtool_check_rules_accepts_the_rules() -> None:
    """`promtool check rules` parses every expression and template of the rule file."""
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    """`promtool test rules`: each alert fires, with its labels and text, only when it should."""
    result = promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_every_alert_is_tested_firing_and_quiet() -> None:
    """Each alert has a unit-test case where it fires and one where it must not."""
    cases = _rule_cases()
    fired = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    names = {rule["alert"] for rule in _rules()}
    assert names == EXPECTED_ALERTS
    assert names - fired == set(), "never shown firing"
    assert names - quiet == set(), "never shown staying quiet"


def test_every_alert_says_what_it_is_and_what_to_do() -> None:
    """Each alert has a severity, a summary and a description with a next step."""
    for rule in _rules():
        annotations = rule.get("annotations", {})
        assert rule.get("labels", {}).get("severity") in {"critical", "warning"}, rule["alert"]
        assert annotations.get("summary"), rule["alert"]
        # A description says what to run or check, not only what happened.
        assert "`" in annotations.get("description", ""), rule["alert"]


def test_the_rules_use_only_metrics_the_daemon_exports(tmp_path: Path) -> None:
    """A misspelt metric would make an alert that can never fire: every name is exported."""
    exported = exported_metric_names(tmp_path)
    assert "c66_archiver_max_age_seconds" in exported
    for rule in _rules():
        assert unknown_metrics(rule["expr"], exported) == set(), rule["alert"]

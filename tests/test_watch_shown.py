"""Where findings show beside status: a daemon's /metrics and status page, and the metrics
of missed backups read from the state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from archiver.cloud66.budget import RequestBudget
from archiver.service.metrics import Metrics
from archiver.simulator import Simulator, SimulatorServer
from archiver.state.store import StateStore
from tests.conftest import Workspace, run_pass, settings_for
from tests.daemon_process import (
    free_port,
    http_get,
    metric_samples,
    running_daemon,
    wait_for_metric,
)
from tests.test_status_page import parse_dom

NOW = datetime.now(UTC).replace(microsecond=0)


def _series(uid: str, **labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"stack_uid": uid, "db_type": "mysql", "database_name": "app_db",
                         **labels}.items()))


async def test_a_daemon_shows_findings_on_metrics_and_the_page_and_the_badge_agrees(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """LATE has had no backup for 3 days, SHRUNK's newest dump shrank and its newest backup
    failed, FINE is fine: per-series gauges say so; the page marks two stacks and its badge."""
    sim.add_stack("late-stack", "Late")
    sim.add_series("late-stack", [NOW - timedelta(days=d) for d in (6, 5, 4, 3)], sizes=500)
    sim.add_series(
        "shrunk-stack", [NOW - timedelta(hours=h) for h in (4, 3, 2, 1)],
        sizes=[1000, 1000, 1000, 100],
    )
    sim.add_backup("shrunk-stack", size=10, status=1, backup_date=NOW, result="dump failed")
    sim.add_series("fine-stack", [NOW - timedelta(hours=h) for h in (3, 2, 1)], sizes=500)
    port = free_port()
    config = workspace.write_config(
        server.base_url,
        [{"uid": uid} for uid in ("late-stack", "shrunk-stack", "fine-stack")],
        http={"listen": f"127.0.0.1:{port}"},
        schedule={"interval": "1h"},
    )
    async with running_daemon(config, port) as base:
        text = await wait_for_metric(base, "c66_archiver_passes_total", {"result": "ok"}, 1)
        _, page = await http_get(f"{base}/")

    samples = metric_samples(text)
    assert samples[("c66_archiver_series_late", _series("late-stack"))] == 1
    assert samples[("c66_archiver_series_late", _series("fine-stack"))] == 0
    assert samples[("c66_archiver_series_late_after_seconds", _series("late-stack"))] == 86400 * 2
    newest = samples[("c66_archiver_series_newest_backup_timestamp_seconds", _series("late-stack"))]
    assert newest == (NOW - timedelta(days=3)).timestamp()
    assert samples[("c66_archiver_series_upstream_failed", _series("shrunk-stack"))] == 1
    assert samples[("c66_archiver_series_last_size_bytes", _series("shrunk-stack"))] == 100
    assert samples[("c66_archiver_series_typical_size_bytes", _series("shrunk-stack"))] == 1000
    assert samples[("c66_archiver_series_size_anomaly", _series("shrunk-stack"))] == 1
    assert samples[("c66_archiver_series_size_anomaly", _series("fine-stack"))] == 0
    assert samples[("c66_archiver_missed_backups_unacknowledged", ())] == 0
    info = (("stack_name", "Late"), ("stack_uid", "late-stack"))
    assert samples[("c66_archiver_stack_info", info)] == 1

    dom = parse_dom(page)
    cards = {node.attrs["data-stack-uid"]: node for node in dom.all("article")}
    assert {uid: card.attrs["data-freshness"] for uid, card in cards.items()} == {
        "late-stack": "attention", "shrunk-stack": "attention", "fine-stack": "fresh",
    }
    assert cards["late-stack"].one("h2").text == "Latelate-stack"  # the name, then the uid
    shrunk = [li.text for li in cards["shrunk-stack"].one("ul", **{"class": "watch"}).all("li")]
    assert [line.split(":")[0] for line in shrunk] == ["failed in Cloud 66", "shrank"]
    assert dom.one("span", id="health").text == "attention"
    assert "2 stacks attention" in dom.one("p", **{"class": "health muted"}).text


async def test_missed_backups_are_counted_for_good_and_listed_until_acknowledged(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """The missed counter keeps every missed backup; the unacknowledged gauge drops on ack."""
    first, second, *_ = sim.add_series("stack-a", [NOW - timedelta(days=d) for d in (4, 3, 2, 1)])
    settings = settings_for(workspace, server, "stack-a", transfer={"max_retries": 0})
    sim.faults.blob_errors = 10_000
    await run_pass(settings)
    sim.faults.blob_errors = 0
    sim.set_keep_count("stack-a", 2)
    await run_pass(settings)
    state = StateStore.open(workspace.state)
    try:
        metrics = Metrics()
        metrics.bind(state, RequestBudget(3000))
        before = metric_samples(metrics.render().decode())
        (finding, _) = state.findings.missed(first) + state.findings.missed(second)
        state.findings.acknowledge(finding, "2026-12-01T00:00:00Z")
        after = metric_samples(metrics.render().decode())
    finally:
        state.close()
    total = ("c66_archiver_missed_backups_total", (("stack_uid", "stack-a"),))
    open_ = ("c66_archiver_missed_backups_unacknowledged", ())
    assert (before[total], before[open_]) == (2, 2)
    assert (after[total], after[open_]) == (2, 1)

"""A real Prometheus scrapes a real daemon: series arrive, rules evaluate, dashboard queries run."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from archiver.simulator import Simulator, SimulatorServer
from tests.conftest import Workspace
from tests.daemon_process import (
    free_port,
    http_get,
    running_daemon,
    wait_for_metric,
)
from tests.prometheus_tools import (
    JOB,
    PROMETHEUS,
    RULES,
    dashboard_targets,
    load_dashboard,
    needs_prometheus,
    needs_promtool,
    plain_promql,
    promtool,
)

STACKS = ("stack-a", "stack-b")
MAX_AGE = 12.0  # seconds: short, so the staleness alerts fire while the test watches
# Fires in this test: freshness is past max_age, and the simulator throttled one request.
EXPECTED_FIRING = {
    ("C66ArchiverBackupsStale", None),
    ("C66ArchiverStackStale", "stack-a"),
    ("C66ArchiverStackStale", "stack-b"),
    ("C66ArchiverThrottled", None),
}
# Panels with no data from a daemon that has not run verify (it comes with another issue).
PANELS_WITHOUT_DATA = {"Verify failures"}


@contextlib.asynccontextmanager
async def _prometheus(tmp_path: Path, target_port: int) -> AsyncIterator[str]:
    """Prometheus on a loopback port, scraping the daemon every second with our rules loaded."""
    assert PROMETHEUS is not None
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}
                ],
            }
        )
    )
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await _until(lambda: _ready(base), "prometheus never became ready")
        yield base
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _ready(base: str) -> bool:
    try:
        return (await http_get(f"{base}/-/ready"))[0] == 200
    except aiohttp.ClientConnectionError:
        return False


async def _until(check: Any, failure: str, timeout: float = 45) -> Any:
    """Poll `check()` (async) until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.25)
    raise AssertionError(failure)


async def _api(base: str, path: str, **params: str) -> Any:
    """GET Prometheus' HTTP API; its `data`, after checking that it answered success."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/api/v1/{path}", params=params) as response,
    ):
        body = await response.json()
    assert body["status"] == "success", body
    return body["data"]


async def _query(base: str, expression: str, **params: str) -> list[dict[str, Any]]:
    data = await _api(base, "query", query=expression, **params)
    result: list[dict[str, Any]] = data["result"]
    return result


@needs_prometheus
@needs_promtool
async def test_prometheus_scrapes_the_daemon_evaluates_the_rules_and_runs_the_dashboard(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, tmp_path: Path
) -> None:
    """Series arrive in Prometheus, rules fire as they should, every dashboard query runs."""
    for uid in STACKS:
        sim.add_backup(uid, size=2000)
    sim.faults.throttle = 1  # one throttled answer, retried after 0.2 s: the pass succeeds
    sim.faults.throttle_retry_after = 0.2
    port = free_port()
    config = workspace.write_config(
        server.base_url,
        [{"uid": uid} for uid in STACKS],
        http={"listen": f"127.0.0.1:{port}", "max_age": f"{MAX_AGE:g}s"},
        schedule={"interval": "1h"},
        transfer={"grace_period": "1s"},
    )
    async with running_daemon(config, port) as daemon, _prometheus(tmp_path, port) as prometheus:
        metrics = await wait_for_metric(daemon, "c66_archiver_passes_total", {"result": "ok"}, 1)
        checked = promtool("check", "metrics", stdin=metrics)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        last_success = await _series_arrive(prometheus)
        await _rules_quiet_while_fresh(prometheus, last_success)
        await _dashboard_queries_run(prometheus)
        firing = await _until(lambda: _firing(prometheus), "the staleness alerts never fired")
    assert set(firing) == EXPECTED_FIRING
    summary = firing[("C66ArchiverBackupsStale", None)]["annotations"]["summary"]
    assert summary.endswith(f"on 127.0.0.1:{port}")


async def _series_arrive(prometheus: str) -> float:
    """Wait for the last success and both stacks' series; the last success's value."""

    async def arrived() -> list[dict[str, Any]] | None:
        overall = await _query(
            prometheus, f'c66_archiver_last_success_timestamp_seconds{{job="{JOB}"}}'
        )
        stacks = await _query(prometheus, "c66_archiver_stack_last_success_timestamp_seconds")
        if overall and {series["metric"].get("stack_uid") for series in stacks} == set(STACKS):
            return overall
        return None

    (overall,) = await _until(arrived, "the daemon's series never arrived in Prometheus")
    value = float(overall["value"][1])
    assert abs(value - time.time()) < 30
    assert overall["metric"]["instance"].startswith("127.0.0.1:")
    (up,) = await _query(prometheus, f'up{{job="{JOB}"}}')
    assert up["value"][1] == "1"
    return value


async def _rules_quiet_while_fresh(prometheus: str, last_success: float) -> None:
    """Prometheus loaded every rule; their expressions find nothing while the pass is fresh."""
    groups = (await _api(prometheus, "rules"))["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == len(yaml.safe_load(RULES.read_text())["groups"][0]["rules"])
    assert {rule["health"] for rule in rules} <= {"ok", "unknown"}, rules
    # A moment while the pass is fresh, and after Prometheus' first scrape of the daemon
    # (before it, `up` is absent and the "missing" rule is right to match).
    scraped_by = time.time()  # the series arrived, so a scrape came before now
    moment = max(last_success + MAX_AGE / 2, scraped_by)
    assert moment < last_success + MAX_AGE, "the first scrape came too late to test freshness"
    fresh_moment = f"{moment:.3f}"
    # Let that moment pass and be scraped, then ask Prometheus about it.
    await asyncio.sleep(max(0.0, moment + 1.5 - time.time()))
    for rule in rules:
        if rule["name"] != "C66ArchiverThrottled":  # it is meant to fire here
            assert await _query(prometheus, rule["query"], time=fresh_moment) == [], rule["name"]


async def _dashboard_queries_run(prometheus: str) -> None:
    """Every dashboard query is accepted, and each panel but verify's shows data."""
    with_data: set[str] = set()
    titles = set()
    for panel, target in dashboard_targets(load_dashboard()):
        titles.add(panel["title"])
        expression = plain_promql(target["expr"], instance=".+", window="30s")
        if await _query(prometheus, expression):
            with_data.add(panel["title"])
    assert titles - with_data == PANELS_WITHOUT_DATA


async def _firing(prometheus: str) -> dict[tuple[str, str | None], dict[str, Any]] | None:
    """The firing alerts by (name, stack), once the expected ones all fire."""
    alerts = (await _api(prometheus, "alerts"))["alerts"]
    firing = {
        (alert["labels"]["alertname"], alert["labels"].get("stack_uid")): alert
        for alert in alerts
        if alert["state"] == "firing"
    }
    return firing if set(firing) >= EXPECTED_FIRING else None

"""Metrics and health: a real daemon process scraped over loopback, and `c66-archiver health`."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

from archiver.service.http import PROBE_CACHE_SECONDS, PROBE_FAILURE_CACHE_SECONDS, StorageProbe
from archiver.simulator import Simulator, SimulatorServer
from archiver.storage.local import LocalStorage
from tests.conftest import TOKEN, Workspace, run_cli
from tests.daemon_process import (
    free_port,
    http_get,
    metric_samples,
    running_daemon,
    wait_for_metric,
)


def _config(
    workspace: Workspace, server: SimulatorServer, port: int, **http: Any
) -> tuple[Path, str]:
    config = workspace.write_config(
        server.base_url,
        [{"uid": "stack-a"}],
        http={"listen": f"127.0.0.1:{port}", **http},
        schedule={"interval": "1h"},
        transfer={"grace_period": "1s"},
    )
    return config, f"http://127.0.0.1:{port}"


async def test_metrics_after_a_pass_count_backups_bytes_passes_and_requests(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """/metrics of a real daemon parses, and its values match the pass the daemon ran."""
    sim.add_stack("stack-a")
    sizes = [3000, 600_000]  # the second is a multi-part backup
    for size in sizes:
        sim.add_backup("stack-a", size=size)
    port = free_port()
    config, _ = _config(workspace, server, port)
    async with running_daemon(config, port) as base:
        text = await wait_for_metric(base, "c66_archiver_passes_total", {"result": "ok"}, 1)
        samples = metric_samples(text)
    assert samples[("c66_archiver_backups_archived_total", ())] == 2
    assert samples[("c66_archiver_bytes_archived_total", ())] == sum(sizes)
    assert samples[("c66_archiver_transfer_duration_seconds_count", ())] == 2
    assert samples[("c66_archiver_transfers_in_flight", ())] == 0
    assert samples[("c66_archiver_state_archived_backups", ())] == 2
    assert samples[("c66_archiver_state_file_bytes", ())] > 0
    assert abs(samples[("c66_archiver_last_success_timestamp_seconds", ())] - time.time()) < 60
    per_stack = ("c66_archiver_stack_last_success_timestamp_seconds", (("stack_uid", "stack-a"),))
    assert abs(samples[per_stack] - time.time()) < 60
    requests = {
        dict(labels)["route"]: value
        for (name, labels), value in samples.items()
        if name == "c66_archiver_api_requests_total"
    }
    assert requests["/stacks/:id/backups"] == 1
    assert sum(requests.values()) == sim.stats.api_requests
    budget = samples[("c66_archiver_request_budget_remaining", ())]
    assert budget == 3000 - sim.stats.api_requests
    labels = [value for (_, pairs), _v in samples.items() for _, value in pairs]
    assert not [value for value in labels if "http" in value or TOKEN in value]
    assert TOKEN not in text
    assert "127.0.0.1" not in text


async def test_livez_and_readyz_answer_after_a_good_pass(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """/livez says ok and /readyz is 200 with ready=true once a pass succeeded."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=100)
    port = free_port()
    config, _ = _config(workspace, server, port)
    async with running_daemon(config, port) as base:
        await wait_for_metric(base, "c66_archiver_passes_total", {"result": "ok"}, 1)
        assert await http_get(f"{base}/livez") == (200, "ok\n")
        status, body = await http_get(f"{base}/readyz")
    document = json.loads(body)
    assert status == 200, body
    assert document["ready"] is True
    assert document["reasons"] == []
    assert document["max_age_seconds"] == 7200  # 2x the 1h interval, no jitter


async def test_readyz_503_with_reasons_when_the_last_good_pass_is_too_old(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """With max_age 1s, /readyz turns 503 naming the age; `health` exits 1 on the same rule."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=100)
    port = free_port()
    config, _ = _config(workspace, server, port, max_age="1s")
    async with running_daemon(config, port) as base:
        await wait_for_metric(base, "c66_archiver_passes_total", {"result": "ok"}, 1)
        await asyncio.sleep(2.1)
        status, body = await http_get(f"{base}/readyz")
        health = await run_cli("--config", str(config), "health")
    assert status == 503, body
    (reason,) = json.loads(body)["reasons"]
    assert "more than max_age 1s" in reason
    assert health.code == 1
    assert health.stdout.startswith("unhealthy: last successful pass finished")


async def test_readyz_503_when_the_archive_is_not_writable(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """A storage that refuses the probe write makes /readyz 503 with a storage reason."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=100)
    port = free_port()
    config, _ = _config(workspace, server, port)
    async with running_daemon(config, port) as base:
        await wait_for_metric(base, "c66_archiver_passes_total", {"result": "ok"}, 1)
        # Root ignores permission bits, so make the archive path a file instead.
        shutil.move(workspace.archive, workspace.root / "moved-away")
        workspace.archive.write_text("not a folder")
        status, body = await http_get(f"{base}/readyz")
    assert status == 503, body
    reasons = json.loads(body)["reasons"]
    assert [reason for reason in reasons if reason.startswith("storage is not writable")]


async def test_a_failed_storage_probe_is_kept_seconds_and_a_good_one_a_minute(
    tmp_path: Path,
) -> None:
    """A probe failure is asked again after a few seconds, so a storage that heals reads ready
    at once; a success is still kept a minute (a scrape every few seconds costs one probe)."""
    now = [1000.0]
    archive = tmp_path / "archive"
    archive.write_text("a file where the archive folder goes")
    storage = LocalStorage(archive)
    probe = StorageProbe(storage, clock=lambda: now[0])
    try:
        problem = await probe.problem()
        assert problem is not None
        assert "is not usable" in problem
        archive.unlink()  # healed: the probe creates the folder it needs
        now[0] += PROBE_FAILURE_CACHE_SECONDS
        assert await probe.problem() is None
        assert archive.is_dir()
        archive.rmdir()
        archive.write_text("broken again")
        now[0] += PROBE_FAILURE_CACHE_SECONDS
        assert await probe.problem() is None  # the success is still fresh
        now[0] += PROBE_CACHE_SECONDS
        assert await probe.problem() is not None
    finally:
        await storage.aclose()


async def test_readyz_is_ready_during_the_first_pass_within_the_start_up_grace(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Before the first pass finishes, /readyz is 200 with a note, not a reason."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=200_000)
    sim.faults.slow_downloads = 1
    sim.faults.slow_bytes_per_second = 20_000  # about 10 s
    port = free_port()
    config, _ = _config(workspace, server, port)
    async with running_daemon(config, port) as base:
        await wait_for_metric(base, "c66_archiver_transfers_in_flight", {}, 1)
        status, body = await http_get(f"{base}/readyz")
    document = json.loads(body)
    assert status == 200, body
    assert "start-up grace" in document["notes"][0]


async def test_health_exit_codes_before_and_after_a_pass(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """`health` exits 1 with no state or no good pass, 0 after a good pass; no token needed."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=100)
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}])
    workspace.token_file.unlink()  # health must not need it
    before = await run_cli("--config", str(config), "health")
    assert before.code == 1
    assert before.stdout.startswith("unhealthy: no state at")
    assert not workspace.state.exists()  # a health check creates nothing

    workspace.token_file.write_text(TOKEN)
    sim.faults.malformed_json_stacks = {"stack-a"}
    assert (await run_cli("--config", str(config), "sync")).code == 1
    failed_only = await run_cli("--config", str(config), "health")
    assert (failed_only.code, failed_only.stdout.strip()) == (
        1,
        "unhealthy: no pass has succeeded yet",
    )

    sim.faults.malformed_json_stacks = set()
    assert (await run_cli("--config", str(config), "sync")).code == 0
    workspace.token_file.unlink()
    after = await run_cli("--config", str(config), "health")
    assert after.code == 0, after.stdout + after.stderr
    assert after.stdout.startswith("healthy: last successful pass finished")
    assert "Traceback" not in after.stderr

"""Alerts against a real HTTP receiver on loopback: pings, webhook, and a receiver in trouble."""

from __future__ import annotations

import signal
import time
from typing import Any

from archiver.simulator import Simulator, SimulatorServer
from tests.conftest import TOKEN, Workspace, run_cli, start_cli, stop_cli, wait_until
from tests.notify_receiver import Receiver

PING_UUID = "5bf3c9d2-8e41-4c7a-9a0b-1f2e3d4c5b6a"


def _config(
    workspace: Workspace,
    server: SimulatorServer,
    receiver: Receiver,
    uids: list[str],
    **notify: Any,
) -> str:
    settings = {
        "healthchecks_url": f"{receiver.base_url}/ping/{PING_UUID}",
        "webhook_url": f"{receiver.base_url}/hook",
        **notify,
    }
    config = workspace.write_config(
        server.base_url, [{"uid": uid} for uid in uids], notify=settings
    )
    return str(config)


async def test_good_pass_pings_start_then_success_and_no_webhook(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, receiver: Receiver
) -> None:
    """A good pass pings <url>/start then <url>; the webhook stays quiet by default."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=100)
    config = _config(workspace, server, receiver, ["stack-a"])
    result = await run_cli("--config", config, "sync")
    assert result.code == 0, result.stderr
    assert receiver.paths() == [f"/ping/{PING_UUID}/start", f"/ping/{PING_UUID}"]


async def test_failing_pass_pings_fail_with_the_log_tail_and_posts_the_webhook(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, receiver: Receiver
) -> None:
    """A failing pass pings /fail with its log's tail and posts the summary as JSON."""
    sim.add_stack("stack-a")
    sim.add_stack("stack-bad")
    sim.add_backup("stack-a", size=100)
    sim.faults.malformed_json_stacks = {"stack-bad"}
    config = _config(workspace, server, receiver, ["stack-a", "stack-bad"])
    result = await run_cli("--config", config, "sync")
    assert result.code == 1
    assert sorted(receiver.paths()) == sorted(
        [f"/ping/{PING_UUID}/start", f"/ping/{PING_UUID}/fail", "/hook"]
    )
    (fail,) = [r.body.decode() for r in receiver.requests if r.path.endswith("/fail")]
    assert "pass failed" in fail
    assert "failed: stack-bad None: could not list backups" in fail
    assert "last log lines:" in fail
    assert "backup archived" in fail  # a line of the pass's own log
    assert TOKEN not in fail
    (hook,) = receiver.webhook_bodies()
    assert hook["event"] == "pass_failed"
    assert hook["ok"] is False
    assert hook["archived"] == 1
    assert hook["bytes"] == 100
    assert [f["stack_uid"] for f in hook["failed"]] == ["stack-bad"]
    assert set(hook) >= {"started_at", "finished_at", "skipped", "seconds", "hostname"}
    assert PING_UUID not in result.stderr


async def test_webhook_on_success_when_enabled(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, receiver: Receiver
) -> None:
    """With webhook_on_success, a good pass posts its summary too."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=1234)
    config = _config(workspace, server, receiver, ["stack-a"], webhook_on_success=True)
    result = await run_cli("--config", config, "sync")
    assert result.code == 0, result.stderr
    (hook,) = receiver.webhook_bodies()
    assert hook["event"] == "pass_succeeded"
    assert (hook["ok"], hook["archived"], hook["bytes"], hook["failed"]) == (True, 1, 1234, [])


async def test_a_receiver_answering_500_is_retried_logged_and_never_fails_the_pass(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, receiver: Receiver
) -> None:
    """500s are retried `retries` times, logged with the host only, and the pass still exits 0."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=100)
    receiver.mode = "fail"
    config = _config(workspace, server, receiver, ["stack-a"], retries=2, webhook_on_success=True)
    result = await run_cli("--config", config, "sync")
    assert result.code == 0, result.stderr
    assert receiver.paths().count(f"/ping/{PING_UUID}/start") == 3
    assert receiver.paths().count("/hook") == 3
    assert "ping failed; the pass is not affected" in result.stderr
    assert "HTTP 500" in result.stderr
    assert PING_UUID not in result.stderr


async def test_a_hanging_receiver_is_cut_off_by_the_timeout_and_never_stalls_the_pass(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, receiver: Receiver
) -> None:
    """A receiver that never answers costs at most timeout x tries; the pass exits 0."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=100)
    receiver.mode = "hang"
    config = _config(workspace, server, receiver, ["stack-a"], timeout="1s", retries=1)
    started = time.monotonic()
    result = await run_cli("--config", config, "sync", timeout=60)
    elapsed = time.monotonic() - started
    assert result.code == 0, result.stderr
    # start (2 tries) then success (2 tries), 1 s each, plus start-up: well under 15 s.
    assert elapsed < 15
    assert "timed out" in result.stderr
    assert PING_UUID not in result.stderr


async def test_verify_failures_ping_fail_and_post_the_webhook(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, receiver: Receiver
) -> None:
    """A corrupt backup found by verify: /fail with its name and problem, and a webhook."""
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", size=5000)
    config = _config(workspace, server, receiver, ["stack-a"])
    assert (await run_cli("--config", config, "sync")).code == 0
    clean = await run_cli("--config", config, "verify")
    assert clean.code == 0
    pings_after_clean = receiver.paths()
    [tar] = list(workspace.archive.rglob("*.tar"))
    tar.write_bytes(tar.read_bytes()[:4000])
    result = await run_cli("--config", config, "verify")
    assert result.code == 1
    assert pings_after_clean == [f"/ping/{PING_UUID}/start", f"/ping/{PING_UUID}"]
    new = receiver.requests[len(pings_after_clean) :]
    assert sorted(r.path for r in new) == sorted([f"/ping/{PING_UUID}/fail", "/hook"])
    (fail,) = [r.body.decode() for r in new if r.path.endswith("/fail")]
    assert f"corrupt: stack-a {backup_id}: short: 4000 bytes" in fail
    (hook,) = receiver.webhook_bodies()
    assert hook["event"] == "verify_failed"
    assert hook["checked"] == 1
    assert hook["failed"] == [
        {"stack_uid": "stack-a", "backup_id": backup_id,
         "reason": "short: 4000 bytes, the manifest says 5000"}
    ]
    assert PING_UUID not in result.stderr + result.stdout


async def test_a_pass_a_stop_cut_short_pings_neither_success_nor_fail(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, receiver: Receiver
) -> None:
    """SIGTERM with a backup queued: only /start was pinged (no success for a pass that left
    backups due, no failure page for a restart), and no webhook."""
    sim.add_stack("stack-a")
    for _ in range(2):
        sim.add_backup("stack-a", size=150_000)
    sim.faults.slow_downloads = 2
    sim.faults.slow_bytes_per_second = 100_000
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}],
        transfer={"grace_period": "60s", "max_concurrent_downloads": 1},
        notify={"healthchecks_url": f"{receiver.base_url}/ping/{PING_UUID}",
                "webhook_url": f"{receiver.base_url}/hook", "webhook_on_success": True},
    )
    process = await start_cli("--config", str(config), "sync")
    await wait_until(lambda: sim.stats.downloads_started == 1)

    assert await stop_cli(process, signal.SIGTERM) == 143
    assert receiver.paths() == [f"/ping/{PING_UUID}/start"]

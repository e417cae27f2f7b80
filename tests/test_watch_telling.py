"""Findings told once: the webhook, healthchecks' /log and Apprise (json://, not mocked)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from archiver.simulator import Simulator, SimulatorServer
from tests.conftest import REPO_ROOT, TOKEN, Workspace, cli_env, run_cli
from tests.notify_receiver import Receiver

PING_UUID = "0f5e2c4a-7b1d-4e8f-9a3c-6d2b1e0f4a7c"
# A token-like piece of the Apprise URL: it must never be seen again.
APPRISE_SECRET = "Zk3xQ9mW7pL2vR8t"
NOW = datetime.now(UTC).replace(microsecond=0)


def _config(
    workspace: Workspace,
    server: SimulatorServer,
    receiver: Receiver,
    uids: tuple[str, ...] = ("stack-a",),
    **notify: Any,
) -> str:
    port = receiver.base_url.rsplit(":", 1)[1]
    settings = {
        "healthchecks_url": f"{receiver.base_url}/ping/{PING_UUID}",
        "webhook_url": f"{receiver.base_url}/hook",
        "apprise_urls": [f"json://127.0.0.1:{port}/apprise/{APPRISE_SECRET}"],
        "retries": 0,
        **notify,
    }
    stacks = [{"uid": uid} for uid in uids]
    return str(workspace.write_config(server.base_url, stacks, notify=settings))


def _findings_told(receiver: Receiver) -> dict[str, list[Any]]:
    """What each channel received about findings (pass pings and pass webhooks aside)."""
    return {
        "webhook": [body for body in receiver.webhook_bodies() if body["event"] != "pass_failed"],
        "healthchecks": receiver.texts(f"/ping/{PING_UUID}/log"),
        "apprise": receiver.json_bodies(f"/apprise/{APPRISE_SECRET}"),
    }


def _failed_newest(sim: Simulator, uid: str = "stack-a", name: str = "shop") -> int:
    sim.add_backup(uid, database_name=name, size=300, backup_date=NOW - timedelta(days=1))
    return sim.add_backup(
        uid, database_name=name, size=10, status=1, backup_date=NOW - timedelta(hours=1),
        result="mysqldump: Got error 2013: Lost connection to MySQL server during query",
    )


async def test_a_new_finding_is_told_once_to_every_channel_and_survives_restarts(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, receiver: Receiver
) -> None:
    """One upstream failure: one webhook event, one /log entry, one Apprise message, whatever
    passes (each its own process) follow; status shows it from the state."""
    sim.add_stack("stack-a", "Shop")
    sim.add_stack("stack-b", "Blog")
    failed_id = _failed_newest(sim)
    config = _config(workspace, server, receiver, ("stack-a", "stack-b"))

    first = await run_cli("--config", config, "sync")
    second = await run_cli("--config", config, "sync")

    assert (first.code, second.code) == (0, 0), first.stderr
    told = _findings_told(receiver)
    (event,) = told["webhook"]
    assert event["event"] == "upstream_failed"
    assert (event["stack_uid"], event["stack_name"], event["backup_id"]) == (
        "stack-a", "Shop", failed_id,
    )
    assert event["result"].startswith("mysqldump: Got error 2013")
    (log_entry,) = told["healthchecks"]
    (message,) = told["apprise"]
    for text in (log_entry, message["title"] + " " + message["message"], event["message"]):
        assert "Shop (stack-a)" in text
        assert str(failed_id) in text
        assert "failed in Cloud 66" in text
    assert message["type"] == "warning"
    status = json.loads((await run_cli("--config", config, "status", "--json")).stdout)
    assert [entry["backup_id"] for entry in status["watch"]["upstream_failed"]] == [failed_id]
    everything = first.stderr + second.stderr + json.dumps(receiver.webhook_bodies())
    everything += "".join(told["healthchecks"]) + json.dumps(told["apprise"])
    assert APPRISE_SECRET not in everything
    assert PING_UUID not in first.stderr + second.stderr
    assert TOKEN not in everything


async def test_what_a_channel_did_not_take_is_sent_at_the_next_pass_and_never_fails_one(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, receiver: Receiver
) -> None:
    """Every channel down: the pass still exits 0; the next pass delivers; the third is quiet."""
    _failed_newest(sim)
    config = _config(workspace, server, receiver)
    receiver.mode = "fail"
    refused = await run_cli("--config", config, "sync")
    assert refused.code == 0
    assert "findings not delivered; sent again at the next pass" in refused.stderr
    assert "apprise_urls[0] (json://)" in refused.stderr
    assert APPRISE_SECRET not in refused.stderr
    attempts = len(_findings_told(receiver)["apprise"])
    assert attempts >= 1
    receiver.mode = "ok"

    await run_cli("--config", config, "sync")
    delivered = {channel: len(items) for channel, items in _findings_told(receiver).items()}
    await run_cli("--config", config, "sync")

    assert {channel: len(items) for channel, items in _findings_told(receiver).items()} == (
        delivered
    )
    assert delivered == {"webhook": 2, "healthchecks": 2, "apprise": attempts + 1}


async def test_a_burst_reaches_people_as_one_digest_and_machines_as_one_event_each(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, receiver: Receiver
) -> None:
    """Twelve failed series at once: twelve webhook events, one Apprise and one /log digest."""
    for n in range(12):
        _failed_newest(sim, name=f"db_{n:02d}")
    config = _config(workspace, server, receiver)
    assert (await run_cli("--config", config, "sync")).code == 0
    told = _findings_told(receiver)
    assert len(told["webhook"]) == 12
    (digest,) = told["apprise"]
    assert digest["title"] == "c66-archiver: 12 new findings about Cloud 66 backups"
    assert all(f"db_{n:02d}" not in digest["title"] for n in range(12))
    assert digest["message"].count("backup failed in Cloud 66") == 12
    (log_digest,) = told["healthchecks"]
    assert log_digest.count("- backup failed in Cloud 66") == 12


async def test_pass_and_verify_failures_also_reach_the_apprise_urls(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, receiver: Receiver
) -> None:
    """A failing pass and a corrupt backup found by verify each send an Apprise failure."""
    sim.add_backup("stack-a", size=5000, backup_date=NOW - timedelta(hours=1))
    sim.add_stack("stack-b")
    sim.faults.malformed_json_stacks = {"stack-b"}
    config = _config(workspace, server, receiver, ("stack-a", "stack-b"))
    assert (await run_cli("--config", config, "sync")).code == 1
    (pass_failed,) = receiver.json_bodies(f"/apprise/{APPRISE_SECRET}")
    assert pass_failed["title"].startswith("c66-archiver: pass failed on ")
    assert "failed: stack-b None: could not list backups" in pass_failed["message"]
    assert pass_failed["type"] == "failure"
    [tar] = list(workspace.archive.rglob("*.tar"))
    tar.write_bytes(tar.read_bytes()[:4000])

    assert (await run_cli("--config", config, "verify")).code == 1

    verify_failed = receiver.json_bodies(f"/apprise/{APPRISE_SECRET}")[-1]
    assert verify_failed["title"] == "c66-archiver: verify found 1 backups not intact"
    assert "short: 4000 bytes" in verify_failed["message"]


async def test_apprise_is_not_loaded_without_an_apprise_url(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """A pass with no Apprise URL never imports apprise (it costs about a second)."""
    sim.add_backup("stack-a", size=100)
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}])
    script = (
        "import sys\nfrom archiver.cli import main\n"
        "try:\n    main()\nexcept SystemExit as end:\n"
        "    print('apprise loaded' if 'apprise' in sys.modules else 'apprise not loaded',"
        " file=sys.stderr)\n    raise\n"
    )
    import asyncio

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, "--config", str(config), "sync",
        stderr=asyncio.subprocess.PIPE, env=cli_env(), cwd=str(REPO_ROOT),
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    assert stderr.decode().rstrip().endswith("apprise not loaded")

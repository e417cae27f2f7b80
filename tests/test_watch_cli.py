"""The watch from the command line: `watch ack`, bad config, check-config, status, names."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from archiver.simulator import Simulator, SimulatorServer
from archiver.state.findings import MISSED, Finding, Outbox
from archiver.state.store import StateStore
from tests.conftest import Workspace, run_cli, run_pass, settings_for

NOW = datetime.now(UTC).replace(microsecond=0)


async def _one_missed(sim: Simulator, server: SimulatorServer, workspace: Workspace) -> int:
    """A pass that archives nothing, a rotation, a good pass: one missed backup; its id."""
    sim.add_stack("stack-a", "Shop")
    first, *_ = sim.add_series("stack-a", [NOW - timedelta(days=d) for d in (3, 2, 1)])
    settings = settings_for(workspace, server, "stack-a", transfer={"max_retries": 0})
    sim.faults.blob_errors = 10_000
    await run_pass(settings)
    sim.faults.blob_errors = 0
    sim.set_keep_count("stack-a", 2)
    await run_pass(settings)
    return first


async def _status(config: Path) -> dict[str, object]:
    result = await run_cli("--config", str(config), "status", "--json")
    assert result.code == 0, result.stderr
    document: dict[str, object] = json.loads(result.stdout)
    return document


# -- watch ack -------------------------------------------------------------------------


async def test_watch_ack_takes_a_missed_backup_off_the_list_beside_a_running_daemon(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """With the instance lock held (a daemon), ack exits 0; status lists it no more; the
    missed counter keeps it; a second ack says it was done already."""
    missed_id = await _one_missed(sim, server, workspace)
    holder = StateStore.open(workspace.state)
    holder.lock.acquire()
    try:
        acked = await run_cli("--config", str(workspace.config), "watch", "ack", str(missed_id))
        again = await run_cli("--config", str(workspace.config), "watch", "ack", str(missed_id))
    finally:
        holder.close()
    assert acked.code == 0, acked.stderr
    assert acked.stdout.strip() == f"acknowledged: missed backup {missed_id} of Shop (stack-a)"
    assert again.code == 0
    assert "acknowledged already" in again.stdout
    status = await _status(workspace.config)
    assert status["watch"] == {
        "missed": [], "late": [], "upstream_failed": [], "size_anomalies": [],
    }
    await run_pass(settings_for(workspace, server, "stack-a"))
    state = StateStore.open(workspace.state)
    try:
        assert state.findings.missed_counts() == {"stack-a": (1, 0)}
        assert state.findings.current() == []  # a pass never brings it back
    finally:
        state.close()


async def test_watch_ack_of_an_unknown_or_ambiguous_id_exits_2(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """An id that is not a missed backup, or one of two stacks without --stack: exit 2."""
    missed_id = await _one_missed(sim, server, workspace)
    state = StateStore.open(workspace.state)
    details = {"stack_uid": "stack-z", "backup_id": missed_id, "db_type": "mysql",
               "database_name": "x", "backup_date": None, "noticed_at": "2026-01-01T00:00:00Z"}
    state.findings.add(
        [Finding(MISSED, json.dumps(["stack-z", missed_id]), "stack-z", missed_id, details,
                 "2026-01-01T00:00:00Z")],
        Outbox(state.database),
    )
    state.close()
    config = str(workspace.config)

    unknown = await run_cli("--config", config, "watch", "ack", "999999")
    ambiguous = await run_cli("--config", config, "watch", "ack", str(missed_id))
    chosen = await run_cli("--config", config, "watch", "ack", str(missed_id), "--stack", "stack-z")

    assert unknown.code == 2
    assert "backup 999999 is not a missed backup" in unknown.stderr
    assert ambiguous.code == 2
    assert "several stacks (stack-a, stack-z): name one with --stack" in ambiguous.stderr
    assert chosen.code == 0
    remaining = (await _status(workspace.config))["watch"]
    assert isinstance(remaining, dict)
    assert [entry["stack_uid"] for entry in remaining["missed"]] == ["stack-a"]


async def test_watch_ack_without_a_state_exits_2_and_creates_nothing(
    workspace: Workspace, server: SimulatorServer
) -> None:
    """No state yet: nothing can be acknowledged, and no state is made."""
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}])
    result = await run_cli("--config", str(config), "watch", "ack", "7")
    assert result.code == 2
    assert "backup 7 is not a missed backup: no state at" in result.stderr
    assert not workspace.state.exists()


# -- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sections", "stacks", "named"),
    [
        ({"watch": {"max_backup_age": "two days"}}, None, "watch.max_backup_age"),
        ({"watch": {"shrink_ratio": 1}}, None, "watch.shrink_ratio"),
        ({"watch": {"shrink_ratio": 0}}, None, "watch.shrink_ratio"),
        ({"watch": {"shrink_ratio": 1.5}}, None, "watch.shrink_ratio"),
        (
            {},
            [{"uid": "stack-a", "watch": {"max_backup_age": "8x"}}],
            "stacks[0].watch.max_backup_age",
        ),
        ({"watch": {"treshold": "1d"}}, None, "watch.treshold: unknown key"),
    ],
)
async def test_a_bad_watch_key_exits_2_naming_it(
    workspace: Workspace,
    server: SimulatorServer,
    sections: dict[str, object],
    stacks: list[dict[str, object]] | None,
    named: str,
) -> None:
    """max_backup_age not a duration, shrink_ratio outside (0, 1): exit 2 naming the key."""
    config = workspace.write_config(server.base_url, stacks or [{"uid": "stack-a"}], **sections)
    result = await run_cli("--config", str(config), "sync")
    assert result.code == 2
    assert f"{config}: {named}" in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_bad_apprise_url_is_named_by_position_and_scheme_never_whole(
    workspace: Workspace, server: SimulatorServer
) -> None:
    """An Apprise URL Apprise cannot use: exit 2 from any command, naming index and scheme."""
    secret = "hunter2hunter2hunter2"
    urls = ["json://127.0.0.1:9/ok", f"nosuchservice://{secret}@example.com/path"]
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}], notify={"apprise_urls": urls}
    )
    for command in (["check-config"], ["sync"], ["status"]):
        result = await run_cli("--config", str(config), *command)
        assert result.code == 2, command
        assert "notify.apprise_urls[1]: Apprise cannot use a nosuchservice:// URL" in result.stderr
        assert secret not in result.stderr + result.stdout
    schemeless = f"hooks.slack.com/services/T0/B0/{secret}"
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}], notify={"apprise_urls": [schemeless]}
    )
    result = await run_cli("--config", str(config), "check-config")
    assert result.code == 2
    assert "notify.apprise_urls[0]: Apprise cannot use text without a scheme://" in result.stderr
    assert secret not in result.stderr + result.stdout


async def test_check_config_names_each_apprise_url_by_position_and_scheme(
    sim: Simulator, workspace: Workspace, server: SimulatorServer
) -> None:
    """check-config lists the Apprise URLs it accepted, without their secrets."""
    sim.add_stack("stack-a")
    secret = "T0kenT0kenT0ken"
    urls = [f"json://127.0.0.1:9/{secret}", f"ntfy://{secret}"]
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}], notify={"apprise_urls": urls}
    )
    result = await run_cli("--config", str(config), "check-config")
    assert result.code == 0, result.stderr
    assert "ok      notify apprise_urls[0] (json://): Apprise can send to it" in result.stdout
    assert "ok      notify apprise_urls[1] (ntfy://): Apprise can send to it" in result.stdout
    assert secret not in result.stdout + result.stderr


# -- status and names ------------------------------------------------------------------


async def test_status_shows_a_watch_section_only_when_there_is_something_to_say(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """All well: no watch section. A shrunken dump and a failure: one line each, names first."""
    sim.add_stack("stack-a", "Shop")
    sim.add_series("stack-a", [NOW - timedelta(hours=h) for h in (3, 2, 1)], sizes=1000)
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}])
    assert (await run_cli("--config", str(config), "sync")).code == 0
    quiet = await run_cli("--config", str(config), "status")
    assert "Watch" not in quiet.stdout
    assert "Shop" in quiet.stdout  # the name beside the uid in the stacks table
    sim.add_backup("stack-a", size=100, backup_date=NOW - timedelta(minutes=30))
    sim.add_backup("stack-a", size=10, status=1, backup_date=NOW, result="disk full")
    assert (await run_cli("--config", str(config), "sync")).code == 0

    result = await run_cli("--config", str(config), "status")

    watch = result.stdout.split("Watch over Cloud 66:\n")[1].splitlines()[:2]
    assert watch[0].startswith("  failed upstream Shop (stack-a) mysql/app_db #")
    assert watch[0].endswith(": disk full")
    assert watch[1].startswith("  shrank Shop (stack-a) mysql/app_db #")
    assert watch[1].endswith("100 B, typically 1000 B")


async def test_names_come_from_get_stacks_at_most_once_a_day(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Three passes read /stacks once; a day later, once more; status shows the names."""
    sim.add_stack("stack-a", "Shop")
    sim.add_backup("stack-a", size=100)
    settings = settings_for(workspace, server, "stack-a")
    for _ in range(3):
        await run_pass(settings)
    assert sim.stats.api_requests_by_path["list_stacks"] == 1
    state = StateStore.open(workspace.state)
    state.stack_names.note_read(datetime.now(UTC) - timedelta(days=1, minutes=1))
    state.close()
    sim.add_stack("stack-a", "Shop (renamed)")

    await run_pass(settings)

    assert sim.stats.api_requests_by_path["list_stacks"] == 2
    status = await _status(workspace.config)
    stacks = status["stacks"]
    assert isinstance(stacks, list)
    assert [(s["stack_uid"], s["stack_name"]) for s in stacks] == [("stack-a", "Shop (renamed)")]


async def test_with_discover_the_names_cost_no_request_of_their_own(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """[discover] lists the stacks anyway: two passes, two /stacks reads, names recorded."""
    sim.add_stack("stack-a", "Shop")
    sim.add_backup("stack-a", size=100)
    config = workspace.write_config(server.base_url, [], discover={"enabled": True})
    for _ in range(2):
        assert (await run_cli("--config", str(config), "sync")).code == 0
    assert sim.stats.api_requests_by_path["list_stacks"] == 2
    stacks = (await _status(config))["stacks"]
    assert isinstance(stacks, list)
    assert [s["stack_name"] for s in stacks] == ["Shop"]

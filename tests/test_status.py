"""`c66-archiver status`: the per-stack summary in JSON and as tables."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from archiver.simulator import Simulator, SimulatorServer
from tests.conftest import Workspace, run_cli


async def _two_stacks_one_failing(sim: Simulator, server: SimulatorServer, workspace: Workspace):  # type: ignore[no-untyped-def]
    """stack-a: two backups archived; stack-bad: its listing fails. Returns (config, ids)."""
    sim.add_stack("stack-a")
    sim.add_stack("stack-bad")
    older = sim.add_backup(
        "stack-a",
        database_name="shop",
        size=300,
        backup_date=datetime.now(UTC) - timedelta(days=2),
    )
    newer = sim.add_backup(
        "stack-a",
        database_name="shop",
        size=700,
        backup_date=datetime.now(UTC) - timedelta(hours=3),
    )
    sim.faults.malformed_json_stacks = {"stack-bad"}
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}, {"uid": "stack-bad"}])
    assert (await run_cli("--config", str(config), "sync")).code == 1
    return str(config), older, newer


async def test_status_json_has_a_per_stack_summary_and_keeps_the_contract_fields(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """`stacks` gives per stack the last backup, its age, totals and the last pass's failures."""
    config, older, newer = await _two_stacks_one_failing(sim, server, workspace)
    result = await run_cli("--config", config, "status", "--json")
    assert result.code == 0, result.stderr
    document = json.loads(result.stdout)
    assert set(document) == {
        "archived", "last_run", "stacks", "last_verify", "pruned", "storage", "watch"
    }
    assert (document["last_verify"], document["pruned"]) == (None, 0)
    assert {entry["backup_id"] for entry in document["archived"]} == {older, newer}
    good, bad = document["stacks"]
    assert good["stack_uid"] == "stack-a"
    assert (good["archived_count"], good["archived_bytes"]) == (2, 1000)
    assert good["last_backup"]["backup_id"] == newer
    assert 3 * 3600 - 60 <= good["last_backup_age_seconds"] <= 3 * 3600 + 300
    assert good["failures"] == []
    assert good["last_success_at"] is not None
    assert bad["stack_uid"] == "stack-bad"
    assert (bad["archived_count"], bad["last_backup"], bad["last_success_at"]) == (0, None, None)
    (failure,) = bad["failures"]
    assert "could not list backups" in failure["reason"]


async def test_status_table_shows_stacks_and_all_shows_every_backup(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """The default table is per stack with failures; --all adds the per-backup table."""
    config, older, newer = await _two_stacks_one_failing(sim, server, workspace)
    summary = await run_cli("--config", config, "status")
    assert summary.code == 0, summary.stderr
    assert "Stacks" in summary.stdout
    assert f"#{newer}" in summary.stdout
    assert "never" in summary.stdout  # stack-bad never succeeded
    assert "failed stack stack-bad" in summary.stdout
    assert "Archived backups" not in summary.stdout
    everything = await run_cli("--config", config, "status", "--all")
    assert "Archived backups" in everything.stdout
    assert str(older) in everything.stdout

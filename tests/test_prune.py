"""prune: crash safety (kill -9 mid-prune), removal order, after_pass, and its refusals."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from archiver.config.settings import load_settings, policy_for, settings_from_dict
from archiver.lifecycle.prune import Pruner, plan_prune
from archiver.model.manifest import ArchivedBackup
from archiver.simulator import Simulator, SimulatorServer
from archiver.state.store import StateStore
from archiver.storage.destinations import Destination
from archiver.storage.local import LocalStorage
from tests.conftest import Workspace, run_cli, run_pass, start_cli

START = datetime(2025, 1, 1, 3, 0, tzinfo=UTC)


def _daily_backups(sim: Simulator, count: int, size: int = 600) -> list[int]:
    return [
        sim.add_backup("stack-a", size=size, backup_date=START + timedelta(days=day))
        for day in range(count)
    ]


def _listed_but_half_gone(archive: Path) -> list[Path]:
    """Manifests whose data file is missing: what a prune must never leave."""
    half = []
    for manifest in archive.rglob("manifest.json"):
        named = json.loads(manifest.read_text())["file"]
        if not (manifest.parent / named).exists():
            half.append(manifest)
    return half


async def test_kill_9_mid_prune_leaves_nothing_half_gone_and_the_next_prune_finishes(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """A real prune process killed mid-way: every listed backup is whole; prune again finishes."""
    ids = _daily_backups(sim, 300)
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}], retention={"keep_last": 10}
    )
    assert (await run_cli("--config", str(config), "sync")).code == 0
    process = await start_cli("--config", str(config), "prune")
    for _ in range(2000):  # until the first tombstone: the prune is under way
        if any(workspace.archive.rglob("pruned.json")):
            break
        await asyncio.sleep(0.005)
    process.kill()
    await process.wait()

    tombstones = len(list(workspace.archive.rglob("pruned.json")))
    assert 0 < tombstones < 290, "the kill should land in the middle of the prune"
    assert _listed_but_half_gone(workspace.archive) == []
    result = await run_cli("--config", str(config), "prune", "--json")
    assert result.code == 0, result.stderr
    assert len(list(workspace.archive.rglob("pruned.json"))) == 290
    assert len(list(workspace.archive.rglob("*.tar"))) == 10
    assert len(list(workspace.archive.rglob("manifest.json"))) == 10
    shutil.rmtree(workspace.state)
    sim.stats.reset()
    assert (await run_cli("--config", str(config), "sync")).code == 0
    assert sim.stats.downloads_started == 0
    state = StateStore.open(workspace.state)
    try:
        assert state.archived.ids("stack-a") == set(ids[-10:])
        assert state.pruned.unfinished() == []
    finally:
        state.close()


class _RecordingStorage(LocalStorage):
    """Real local storage that notes each write and removal, and what the state said then."""

    def __init__(self, root: Path, state: StateStore, calls: list[str]) -> None:
        super().__init__(root)
        self._state = state
        self.calls = calls

    def _note(self, action: str, key: str) -> None:
        unfinished = len(self._state.pruned.unfinished())
        self.calls.append(f"{action} {key.rpartition('/')[2]} (unfinished prunes: {unfinished})")

    async def write_small(self, key: str, data: bytes) -> None:
        self._note("write", key)
        await super().write_small(key, data)

    async def remove(self, key: str) -> None:
        self._note("remove", key)
        await super().remove(key)


async def test_removal_order_is_state_tombstone_manifest_then_data(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """The state first, then the tombstone, the manifest before the data, then done."""
    _daily_backups(sim, 2)
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}], retention={"keep_last": 1}
    )
    settings = load_settings(config)
    await run_pass(settings)
    calls: list[str] = []
    state = StateStore.open(workspace.state)
    storage = _RecordingStorage(workspace.archive, state, calls)
    destination = Destination("default", settings.storage[0], storage, None, ())
    try:
        plan = plan_prune(lambda uid: policy_for(settings, uid), state.archived.all())
        [doomed] = plan.remove
        outcome = await Pruner(state, destination).carry_out(plan)
        assert (outcome.removed, outcome.failures) == (1, [])
        assert state.pruned.unfinished() == []
        assert state.pruned.ids("stack-a") == {doomed.record.backup_id}
    finally:
        await storage.aclose()
        state.close()
    assert calls == [
        "write pruned.json (unfinished prunes: 1)",
        "remove manifest.json (unfinished prunes: 1)",
        f"remove {Path(doomed.record.tar_key).name} (unfinished prunes: 1)",
    ]


async def test_after_pass_prunes_after_a_good_pass_and_never_after_a_failed_one(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """after_pass = true: a pass with a failure leaves everything; a good pass prunes."""
    _daily_backups(sim, 4)
    sim.add_stack("stack-bad")
    sim.faults.malformed_json_stacks = {"stack-bad"}
    config = workspace.write_config(
        server.base_url,
        [{"uid": "stack-a"}, {"uid": "stack-bad"}],
        retention={"keep_last": 2, "after_pass": True},
    )
    failed = await run_cli("--config", str(config), "sync")
    assert failed.code == 1
    assert len(list(workspace.archive.rglob("manifest.json"))) == 4
    assert not list(workspace.archive.rglob("pruned.json"))
    sim.faults.malformed_json_stacks = set()
    good = await run_cli("--config", str(config), "sync")
    assert good.code == 0, good.stderr
    assert "pruned 2" in good.stderr
    assert len(list(workspace.archive.rglob("manifest.json"))) == 2
    assert len(list(workspace.archive.rglob("pruned.json"))) == 2


async def test_prune_while_a_pass_holds_the_pass_lock_exits_3(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """prune is a writer: while a pass runs (the pass lock held) it refuses at once, changing
    nothing; the preview still runs."""
    _daily_backups(sim, 3)
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}], retention={"keep_last": 1}
    )
    assert (await run_cli("--config", str(config), "sync")).code == 0
    holder = StateStore.open(workspace.state)
    holder.pass_lock.acquire()
    try:
        result = await run_cli("--config", str(config), "prune")
        preview = await run_cli("--config", str(config), "prune", "--dry-run")
    finally:
        holder.pass_lock.release()
        holder.close()
    assert result.code == 3
    assert f"pid {os.getpid()}" in result.stderr
    assert len(list(workspace.archive.rglob("manifest.json"))) == 3
    assert preview.code == 0, preview.stderr
    assert "kept 1, would remove 2" in preview.stdout


async def test_prune_without_a_policy_keeps_everything_and_says_so(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """No [retention]: every backup is kept (reason 'no retention policy'), nothing removed."""
    _daily_backups(sim, 2)
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}])
    assert (await run_cli("--config", str(config), "sync")).code == 0
    result = await run_cli("--config", str(config), "prune")
    assert result.code == 0, result.stderr
    assert "No [retention] in the config: every backup is kept." in result.stdout
    assert "kept 2, removed 0" in result.stdout
    as_json = json.loads((await run_cli("--config", str(config), "prune", "--json")).stdout)
    assert [entry["reasons"] for entry in as_json["keep"]] == [["no retention policy"]] * 2


async def test_a_bad_policy_is_a_config_error_naming_the_key(workspace: Workspace) -> None:
    """A negative count exits 2 and names the file and the key; nothing is opened."""
    config = workspace.write_config(
        "http://127.0.0.1:9", [{"uid": "stack-a"}], retention={"keep_daily": -1}
    )
    result = await run_cli("--config", str(config), "prune")
    assert result.code == 2
    assert f"{config}: retention.keep_daily" in result.stderr
    assert not workspace.state.exists()


def test_plan_ties_break_by_backup_id() -> None:
    """Two backups with the same date: the larger id counts as the newer one."""
    date = "2026-11-29T03:00:00Z"
    records = [
        ArchivedBackup("s", backup_id, "mysql", "db", 1, "x", date, "t", "m", date)
        for backup_id in (7, 9)
    ]
    text = '[[stacks]]\nuid = "s"\n[retention]\nkeep_last = 1\n'
    settings = settings_from_dict(tomllib.loads(text))
    plan = plan_prune(lambda uid: policy_for(settings, uid), records)
    assert [verdict.record.backup_id for verdict in plan.keep] == [9]

"""Beside a running daemon: readers and previews never wait, prune runs between passes,
and commands that only read the state create nothing."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from archiver.commands.verify import without_pruned_meanwhile
from archiver.lifecycle.verify import CheckResult
from archiver.model.manifest import ArchivedBackup
from archiver.simulator import Simulator, SimulatorServer
from archiver.state.records import PrunedBackup
from archiver.state.store import StateStore
from tests.conftest import Workspace, render_toml, run_cli, start_cli

START = datetime(2025, 1, 1, 3, 0, tzinfo=UTC)


def _daily_backups(sim: Simulator, count: int, size: int = 600) -> list[int]:
    sim.add_stack("stack-a")
    return [
        sim.add_backup("stack-a", size=size, backup_date=START + timedelta(days=day))
        for day in range(count)
    ]


def _runs_finished(workspace: Workspace) -> list[str]:
    """`finished_at` of the last recorded pass (empty before the first), read as a reader."""
    state = StateStore.open_existing(workspace.state)
    if state is None:
        return []
    try:
        last = state.runs.last()
        return [last.finished_at] if last else []
    finally:
        state.close()


async def _until(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def _line_with(stream: asyncio.StreamReader | None, text: str, timeout: float = 60) -> str:
    """Read lines from a process's stderr until one contains `text`."""
    assert stream is not None

    async def read() -> str:
        while line := await stream.readline():
            if text in line.decode(errors="replace"):
                return line.decode()
        raise AssertionError(f"the process ended without saying {text!r}")

    return await asyncio.wait_for(read(), timeout)


@asynccontextmanager
async def _daemon(config: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """A daemon process on `config`; SIGTERM at the end, which it must answer with exit 0."""
    process = await start_cli("--config", str(config))
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 0


def _manifest_ids(archive: Path) -> set[int]:
    return {int(json.loads(m.read_text())["backup_id"]) for m in archive.rglob("manifest.json")}


async def test_readers_and_previews_work_while_a_daemon_holds_the_instance_lock(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, tmp_path: Path
) -> None:
    """status, verify, restore and prune -n run beside a sleeping daemon; a second pass exits 3."""
    ids = _daily_backups(sim, 3)
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}], schedule={"interval": "1h"},
        retention={"keep_last": 1},
    )
    async with _daemon(config):
        await _until(lambda: bool(_runs_finished(workspace)))
        preview = await run_cli("prune", "-n", "--json", "--config", str(config))
        assert preview.code == 0, preview.stderr
        plan = json.loads(preview.stdout)
        assert plan["dry_run"] is True
        assert sorted(entry["backup_id"] for entry in plan["remove"]) == ids[:2]
        status = await run_cli("status", "--json", "--config", str(config))
        assert status.code == 0, status.stderr
        assert len(json.loads(status.stdout)["archived"]) == 3
        verify = await run_cli("verify", "--config", str(config))
        assert verify.code == 0, verify.stderr
        restored = tmp_path / "restored.tar"
        restore = await run_cli(
            "restore", str(ids[0]), "-o", str(restored), "--config", str(config)
        )
        assert restore.code == 0, restore.stderr
        assert restored.stat().st_size == 600
        second = await run_cli("sync", "--config", str(config), timeout=30)
        assert second.code == 3
        assert "another c66-archiver instance holds the state lock" in second.stderr
        assert _manifest_ids(workspace.archive) == set(ids)


async def test_prune_beside_a_sleeping_daemon_and_its_next_passes_fetch_nothing_pruned(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """prune for real between passes; the daemon's later passes never download a pruned backup."""
    ids = _daily_backups(sim, 4)
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}], schedule={"interval": "2s"},
        retention={"keep_last": 1},
    )
    async with _daemon(config):
        await _until(lambda: bool(_runs_finished(workspace)))
        # --wait: with a pass every 2 s, the prune may land while one runs.
        pruned = await run_cli("--config", str(config), "prune", "--wait")
        assert pruned.code == 0, pruned.stderr
        assert "removed 3" in pruned.stdout
        urls_after_prune = sim.stats.public_urls_issued
        finished_at_prune = _runs_finished(workspace)
        # Two passes later (Cloud 66 still lists all four), nothing came back.
        await _until(lambda: _runs_finished(workspace) != finished_at_prune)
        later = _runs_finished(workspace)
        await _until(lambda: _runs_finished(workspace) != later)
    assert sim.stats.public_urls_issued == urls_after_prune == 4
    assert _manifest_ids(workspace.archive) == {ids[-1]}
    assert len(list(workspace.archive.rglob("pruned.json"))) == 3


async def test_prune_during_a_pass_exits_3_at_once_and_waits_with_wait(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """While the daemon's pass downloads, prune exits 3; prune --wait runs once the pass ends."""
    sim.add_stack("stack-a")
    old = sim.add_backup("stack-a", size=600, backup_date=START)
    slow = sim.add_backup("stack-a", size=200_000, backup_date=START + timedelta(days=1))
    sim.faults.slow_downloads = 1
    sim.faults.slow_bytes_per_second = 20_000  # ten seconds of download
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}], schedule={"interval": "1h"},
        retention={"keep_last": 1}, transfer={"max_concurrent_downloads": 1},
    )
    async with _daemon(config):
        await _until(lambda: sim.stats.downloads_started >= 1 and sim.stats.active_downloads > 0)
        refused = await run_cli("--config", str(config), "prune", timeout=30)
        assert refused.code == 3, refused.stderr
        assert "a pass or a prune is running on this state" in refused.stderr
        assert "--wait" in refused.stderr
        assert not _runs_finished(workspace), "the refusal came while the pass ran"
        waited = await run_cli("--config", str(config), "prune", "--wait")
        assert waited.code == 0, waited.stderr
        assert _runs_finished(workspace), "prune --wait ended after the pass"
    assert _manifest_ids(workspace.archive) == {slow}
    assert "removed 1" in waited.stdout
    assert sim.stats.downloads_completed >= 2
    assert old not in _manifest_ids(workspace.archive)


async def test_a_pass_waits_for_a_prune_and_a_stop_ends_the_wait(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """A pass due while a prune holds the pass lock waits (no API call); SIGTERM ends it, exit 0."""
    _daily_backups(sim, 1)
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}])
    holder = StateStore.open(workspace.state)
    holder.pass_lock.acquire()
    try:
        daemon = await start_cli("--config", str(config))
        await _line_with(daemon.stderr, "a prune is running on this state")
        # The waiting daemon holds the instance lock: a one-shot pass is refused at once.
        refused = await run_cli("--config", str(config), "sync", timeout=30)
        assert refused.code == 3, refused.stderr
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(daemon.wait(), 30) == 0
        assert sim.stats.api_requests == 0
        one_shot = await start_cli("--config", str(config), "sync")
        await _line_with(one_shot.stderr, "a prune is running on this state")
        assert sim.stats.api_requests == 0
        assert one_shot.returncode is None
        holder.pass_lock.release()
        assert await asyncio.wait_for(one_shot.wait(), 60) == 0
    finally:
        holder.close()
    assert len(_manifest_ids(workspace.archive)) == 1


async def test_status_and_health_on_a_new_install_create_nothing(tmp_path: Path) -> None:
    """No state yet: status prints an empty document (exit 0), health says so; no file appears."""
    folder = tmp_path / "etc"
    folder.mkdir()
    config = folder / "config.toml"
    config.write_text(render_toml({
        "api": {"base_url": "http://127.0.0.1:9/api/3"},
        "stacks": [{"uid": "stack-a"}],
        "storage": {"type": "local", "path": "archive"},
        "state": {"path": "var/state"},
    }))
    before = sorted(tmp_path.rglob("*"))
    as_json = await run_cli("--config", str(config), "status", "--json", cwd=Path("/"))
    assert as_json.code == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["archived"] == []
    assert document["last_run"] is None
    assert [stack["stack_uid"] for stack in document["stacks"]] == ["stack-a"]
    table = await run_cli("--config", str(config), "status", cwd=Path("/"))
    assert table.code == 0, table.stderr
    assert "No pass has run yet." in table.stdout
    health = await run_cli("--config", str(config), "health", cwd=Path("/"))
    assert health.code == 1
    assert f"no state at {folder / 'var' / 'state'}" in health.stdout
    assert sorted(tmp_path.rglob("*")) == before
    assert not Path("/var/state").exists()
    assert not Path("/archive").exists()


async def test_relative_paths_in_a_config_are_read_from_its_folder(
    sim: Simulator, server: SimulatorServer, tmp_path: Path
) -> None:
    """storage, state and token_file given relative are under the config's folder, run from /."""
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", size=1000)
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "token").write_text("test-token-7f3a9c1e5b\n")
    config = folder / "config.toml"
    config.write_text(render_toml({
        "api": {"base_url": server.base_url, "token_file": "token"},
        "stacks": [{"uid": "stack-a"}],
        "storage": {"type": "local", "path": "archive"},
        "state": {"path": "state"},
    }))
    result = await run_cli("--config", str(config), "sync", cwd=Path("/"))
    assert result.code == 0, result.stderr
    assert _manifest_ids(folder / "archive") == {backup_id}
    assert (folder / "state" / "state.sqlite3").is_file()
    status = json.loads((await run_cli("--config", str(config), "status", "--json")).stdout)
    assert status["archived"][0]["location"].startswith(str(folder / "archive"))


def _record(backup_id: int) -> ArchivedBackup:
    return ArchivedBackup(
        stack_uid="stack-a", backup_id=backup_id, db_type="mysql", database_name="shop",
        size=10, sha256="0" * 64, archived_at="2025-01-01T00:00:00Z",
        tar_key=f"k/{backup_id}/shop.tar", manifest_key=f"k/{backup_id}/manifest.json",
        backup_date="2025-01-01T00:00:00Z",
    )


def test_verify_does_not_call_missing_what_a_prune_beside_it_removed(tmp_path: Path) -> None:
    """A backup pruned while verify read it is dropped from the results; a real loss is kept."""
    state = StateStore.open(tmp_path)
    try:
        for backup_id in (1, 2, 3):
            state.archived.record(_record(backup_id))
        record: dict[str, Any] = {"stack_uid": "stack-a", "backup_id": 2, "db_type": "mysql"}
        state.pruned.record(PrunedBackup(
            **record, database_name="shop", backup_date=None, tar_key="k/2/shop.tar",
            manifest_key="k/2/manifest.json", pruned_at="2025-01-02T00:00:00Z", complete=True,
        ))
        results = [
            CheckResult(_record(1), None),
            CheckResult(_record(2), "the stored object is missing"),
            CheckResult(_record(3), "the stored object is missing"),
        ]
        kept = without_pruned_meanwhile(state, results)
    finally:
        state.close()
    assert [(r.record.backup_id, r.ok) for r in kept] == [(1, True), (3, False)]

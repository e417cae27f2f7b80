"""A one-shot pass (`sync`, `--sync-now`) stops on SIGTERM or SIGINT as the daemon does:
no new work, the grace period for transfers in flight, a prompt exit, nothing half-visible."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from archiver.simulator import Simulator, SimulatorServer
from archiver.state.store import StateStore
from tests.conftest import Workspace, archived_sha256s, run_cli, start_cli, stop_cli, wait_until


def final_named_files(archive: Path) -> list[Path]:
    """Files under `archive` that are not unfinished uploads (`*.part`)."""
    return [path for path in archive.rglob("*") if path.is_file() and path.suffix != ".part"]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
async def test_a_stop_abandons_the_transfer_after_the_grace_period_and_the_next_pass_resumes(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, signum: int, code: int
) -> None:
    """Past a 1 s grace period the transfer is abandoned: exit 128+signal at once (not the
    25 s the download needs), no final-named data, and the next pass resumes and finishes."""
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", size=250_000)  # one part, 25 s at this pace
    sim.faults.slow_downloads = 1
    sim.faults.slow_bytes_per_second = 10_000
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}], transfer={"grace_period": "1s"}
    )
    process = await start_cli("--config", str(config), "sync")
    await wait_until(lambda: sim.stats.bytes_served >= 20_000)

    assert await stop_cli(process, signum, timeout=10) == code
    assert final_named_files(workspace.archive) == []
    [kept] = list(workspace.archive.rglob("*.part"))  # durable, kept for the next pass
    assert kept.stat().st_size >= 20_000
    state = StateStore.open(workspace.state)
    assert not state.archived.contains("stack-a", backup_id)
    state.close()

    result = await run_cli("--config", str(config), "sync")
    assert result.code == 0, result.stderr
    assert "resuming an unfinished upload" in result.stderr
    assert archived_sha256s(workspace.archive) == {backup_id: sim.expected_sha256(backup_id)}
    assert list(workspace.archive.rglob("*.part")) == []


async def test_a_stop_lets_the_last_transfer_finish_and_then_exits_0(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """SIGTERM while the only due backup downloads: it finishes in the grace period, and as
    nothing was left undone the pass exits 0."""
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", size=200_000)  # one part, 2 s at this pace
    sim.faults.slow_downloads = 1
    sim.faults.slow_bytes_per_second = 100_000
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}], transfer={"grace_period": "60s"}
    )
    process = await start_cli("--config", str(config), "sync")
    await wait_until(lambda: sim.stats.downloads_started == 1)

    assert await stop_cli(process, signal.SIGTERM) == 0
    assert archived_sha256s(workspace.archive) == {backup_id: sim.expected_sha256(backup_id)}


async def test_a_stop_starts_no_queued_backup_and_exits_143(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """SIGTERM with a second backup queued behind the first: the first finishes, the second
    never starts, exit 143 (the job is not done); the next pass archives the second."""
    sim.add_stack("stack-a")
    backup_ids = [sim.add_backup("stack-a", size=150_000) for _ in range(2)]  # one part each
    sim.faults.slow_downloads = 2
    sim.faults.slow_bytes_per_second = 100_000
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}],
        transfer={"grace_period": "60s", "max_concurrent_downloads": 1},
    )
    process = await start_cli("--config", str(config), "sync")
    await wait_until(lambda: sim.stats.downloads_started == 1)

    assert await stop_cli(process, signal.SIGTERM) == 143
    assert sim.stats.downloads_started == 1
    assert len(archived_sha256s(workspace.archive)) == 1
    stderr = (await process.stderr.read()).decode() if process.stderr else ""
    assert "stopped: the rest is left for the next pass" in stderr

    result = await run_cli("--config", str(config), "sync")
    assert result.code == 0, result.stderr
    assert set(archived_sha256s(workspace.archive)) == set(backup_ids)


async def test_a_pass_a_stop_cut_short_is_not_the_last_good_pass(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """After a good pass, a pass stopped past its grace period with a backup left is recorded
    ok false (exit 143 still); health keeps the good pass as the last success; the next
    pass archives the backup and becomes it."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=1000)
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}], transfer={"grace_period": "1s"}
    )
    assert (await run_cli("--config", str(config), "sync")).code == 0
    state = StateStore.open(workspace.state)
    good = state.runs.last_success_at()
    state.close()
    sim.add_backup("stack-a", size=250_000)  # one part, 25 s at this pace
    sim.faults.slow_downloads = 1
    sim.faults.slow_bytes_per_second = 10_000
    process = await start_cli("--config", str(config), "sync")
    await wait_until(lambda: sim.stats.bytes_served >= 20_000)

    assert await stop_cli(process, signal.SIGTERM, timeout=10) == 143

    status = await run_cli("--config", str(config), "status", "--json")
    last_run = json.loads(status.stdout)["last_run"]
    assert (last_run["ok"], last_run["archived"], last_run["failed"]) == (False, 0, [])
    state = StateStore.open(workspace.state)
    assert state.runs.last_success_at() == good
    state.close()
    health = await run_cli("--config", str(config), "health")
    assert health.code == 0, health.stdout  # the good pass is recent enough
    result = await run_cli("--config", str(config), "sync")
    assert result.code == 0, result.stderr
    state = StateStore.open(workspace.state)
    last = state.runs.last_success_at()
    state.close()
    assert good is not None
    assert last is not None
    assert last > good


async def test_a_first_pass_a_stop_cut_short_leaves_health_failing(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """With a backup queued behind the one a stop lets finish, the first pass is not a
    success: last_run ok false, `health` exits 1 (no pass succeeded yet)."""
    sim.add_stack("stack-a")
    for _ in range(2):
        sim.add_backup("stack-a", size=150_000)  # one part each
    sim.faults.slow_downloads = 2
    sim.faults.slow_bytes_per_second = 100_000
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}],
        transfer={"grace_period": "60s", "max_concurrent_downloads": 1},
    )
    process = await start_cli("--config", str(config), "sync")
    await wait_until(lambda: sim.stats.downloads_started == 1)

    assert await stop_cli(process, signal.SIGTERM) == 143

    status = await run_cli("--config", str(config), "status", "--json")
    last_run = json.loads(status.stdout)["last_run"]
    assert (last_run["ok"], last_run["archived"], last_run["failed"]) == (False, 1, [])
    text = await run_cli("--config", str(config), "status")
    assert "Last pass: incomplete" in text.stdout
    health = await run_cli("--config", str(config), "health")
    assert health.code == 1
    assert "no pass has succeeded yet" in health.stdout

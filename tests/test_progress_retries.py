"""A download that keeps making progress never gives up; one that does not, does."""

from __future__ import annotations

import structlog

from archiver.simulator import Simulator, SimulatorServer
from tests.conftest import Workspace, archived_sha256s, run_pass, settings_for

KiB = 1024
MiB = 1024 * KiB


async def test_a_body_cut_every_64_kib_completes_with_the_default_settings(
    workspace: Workspace
) -> None:
    """5 MiB cut every 64 KiB (80 broken attempts) still archives, with the default max_retries."""
    sim = Simulator(token="test-token-7f3a9c1e5b", blob_dir=workspace.root / "blobs",
                    part_size=8 * MiB)
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", size=5 * MiB)
    sim.faults.cut_downloads = 10_000
    sim.faults.cut_after_bytes = 64 * KiB
    async with SimulatorServer(sim) as server:
        settings = settings_for(workspace, server, "stack-a")
        assert settings.transfer.max_retries == 5  # the default: far fewer than the cuts
        with structlog.testing.capture_logs() as logs:
            summary = await run_pass(settings)
    assert summary.exit_code == 0
    assert archived_sha256s(workspace.archive) == {backup_id: sim.expected_sha256(backup_id)}
    resumes = [entry for entry in logs if entry["event"] == "download interrupted; resuming"]
    assert len(resumes) >= 5 * MiB // (64 * KiB) - 1
    # Every resume says how far it got and that progress kept the budget full.
    assert all(entry["failures_without_progress"] == 0 for entry in resumes)
    assert all(entry["retries_left"] == 5 for entry in resumes)
    assert resumes[-1]["at_byte"] > 4 * MiB
    assert sim.stats.bytes_served < 5 * MiB + 80 * 64 * KiB  # resumed, never restarted


async def test_a_file_that_never_advances_fails_after_exactly_max_retries_retries(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Each attempt breaks before its first byte: 1 + max_retries requests, then a clear failure."""
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", size=100_000)  # one part
    sim.faults.cut_downloads = 10_000
    sim.faults.cut_after_bytes = 0
    settings = settings_for(workspace, server, "stack-a", transfer={"max_retries": 3})
    summary = await run_pass(settings)
    assert summary.exit_code == 1
    assert sim.stats.blob_requests == 4
    [failure] = summary.failed
    assert failure.backup_id == backup_id
    assert "file tar:" in failure.reason
    assert "gave up after 4 failed attempts" in failure.reason


async def test_progress_resets_the_count_of_failures_in_a_row(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Two refusals, then three advancing cuts: five failures, yet max_retries = 2 is not spent."""
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", size=250_000)  # one part
    sim.faults.blob_errors = 2
    sim.faults.cut_downloads = 3
    sim.faults.cut_after_bytes = 60_000
    settings = settings_for(workspace, server, "stack-a", transfer={"max_retries": 2})
    summary = await run_pass(settings)
    assert summary.exit_code == 0
    assert sim.stats.blob_requests == 6
    assert archived_sha256s(workspace.archive) == {backup_id: sim.expected_sha256(backup_id)}


async def test_the_final_failure_gives_both_counts(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """One advancing cut, then every resume refused: the reason names both counts."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=250_000)  # one part
    sim.faults.cut_downloads = 1
    sim.faults.cut_after_bytes = 100_000
    sim.faults.ranged_faults_after = 1  # the first GET (a Range too) is the one cut
    sim.faults.ranged_errors = 10_000
    settings = settings_for(workspace, server, "stack-a", transfer={"max_retries": 2})
    summary = await run_pass(settings)
    assert summary.exit_code == 1
    [failure] = summary.failed
    assert "gave up after 4 failed attempts, the last 3 without progress" in failure.reason
    assert sim.stats.blob_requests == 4


async def test_the_time_limit_ends_a_slow_but_advancing_trickle(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Each attempt advances, but slowly: max_retry_time ends the download with a clear reason."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=250_000)  # one part
    sim.faults.cut_downloads = 10_000
    sim.faults.cut_after_bytes = 5_000
    sim.faults.slow_downloads = 10_000
    sim.faults.slow_bytes_per_second = 20_000
    settings = settings_for(
        workspace, server, "stack-a", transfer={"max_retry_time": "1s", "max_retries": 2}
    )
    summary = await run_pass(settings)
    assert summary.exit_code == 1
    [failure] = summary.failed
    assert "still failing 1s after the first failure" in failure.reason
    assert sim.stats.bytes_served < 250_000
    assert sim.stats.blob_requests > 3  # more than 1 + max_retries: each attempt advanced

"""Passes under upstream faults: each one recovers, or fails only what it must."""

from __future__ import annotations

from pathlib import Path

import pytest

from archiver.simulator import Simulator, SimulatorServer
from tests.conftest import (
    PART_SIZE,
    TOKEN,
    Workspace,
    archived_sha256s,
    run_pass,
    settings_for,
)


@pytest.mark.parametrize(
    ("faults", "size"),
    [
        pytest.param({"api_errors": 3}, 1000, id="api-5xx-with-html-bodies"),
        pytest.param({"blob_errors": 2}, 1000, id="storage-host-5xx"),
        pytest.param({"slow_downloads": 1, "slow_bytes_per_second": 150_000}, 200_000,
                     id="slow-but-moving-body"),
    ],
)
async def test_transient_upstream_faults_are_retried_and_the_pass_succeeds(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, faults: dict[str, int],
    size: int,
) -> None:
    """Transient 500s (API or storage host) are retried with backoff, and a slow body is not
    mistaken for a stall: the pass succeeds with exact bytes."""
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", size=size)
    for name, value in faults.items():
        setattr(sim.faults, name, value)
    summary = await run_pass(settings_for(workspace, server, "stack-a"))
    assert summary.exit_code == 0
    assert archived_sha256s(workspace.archive) == {backup_id: sim.expected_sha256(backup_id)}
    for counter in ("api_errors", "blob_errors", "slow_downloads"):
        if counter in faults:
            assert getattr(sim.faults, counter) == 0  # every fault was met, and survived


async def test_throttling_is_waited_out(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """503 throttled (with Retry-After) is honoured, then the pass completes."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=1000)
    sim.faults.throttle = 2
    sim.faults.throttle_retry_after = 0.2
    summary = await run_pass(settings_for(workspace, server, "stack-a"))
    assert summary.exit_code == 0
    assert summary.archived == 1


async def test_bodies_cut_mid_stream_resume_with_range(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Downloads cut short resume from the last byte written, and the result is exact."""
    sim.add_stack("stack-a")
    single = sim.add_backup("stack-a", size=PART_SIZE - 100)
    multi = sim.add_backup("stack-a", size=PART_SIZE * 2 + 500)
    sim.faults.cut_downloads = 3
    summary = await run_pass(settings_for(workspace, server, "stack-a"))
    assert summary.exit_code == 0
    assert archived_sha256s(workspace.archive) == {
        single: sim.expected_sha256(single),
        multi: sim.expected_sha256(multi),
    }
    assert sim.stats.bytes_served < (PART_SIZE * 3 + 400) * 1.6  # resumed, not restarted


async def test_resume_answered_with_the_whole_body_starts_the_part_over(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """A 200 to a ranged resume rewinds that part and hashes it afresh: the result is exact."""
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", size=PART_SIZE * 2 + 77)
    sim.faults.cut_downloads = 2
    sim.faults.ignore_range = 2
    summary = await run_pass(settings_for(workspace, server, "stack-a"))
    assert summary.exit_code == 0
    assert sim.faults.ignore_range == 0
    assert archived_sha256s(workspace.archive) == {backup_id: sim.expected_sha256(backup_id)}


async def test_expired_urls_are_replaced_with_fresh_ones(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """A 403 'Request has expired' makes the archiver ask for a new public_url."""
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", size=1000)
    sim.faults.expired_urls = 2
    summary = await run_pass(settings_for(workspace, server, "stack-a"))
    assert summary.exit_code == 0
    assert sim.stats.api_requests_by_path["get_file"] == 3
    assert archived_sha256s(workspace.archive) == {backup_id: sim.expected_sha256(backup_id)}


async def test_short_url_lifetime_with_cut_resumes_on_a_fresh_url(
    tmp_path: Path, workspace: Workspace
) -> None:
    """With 2-second URLs, a download cut after expiry resumes with a new URL."""
    sim = Simulator(token=TOKEN, blob_dir=tmp_path / "blobs", part_size=PART_SIZE, url_lifetime=2.0)
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", size=PART_SIZE - 1)
    # Slow enough that the URL expires mid-body; then cut, so the resume needs a new URL.
    sim.faults.slow_downloads = 1
    sim.faults.slow_bytes_per_second = 50_000
    sim.faults.cut_downloads = 1
    sim.faults.cut_after_bytes = 150_000
    async with SimulatorServer(sim) as server:
        summary = await run_pass(settings_for(workspace, server, "stack-a"))
    assert summary.exit_code == 0
    assert sim.stats.api_requests_by_path["get_file"] >= 2
    assert archived_sha256s(workspace.archive) == {backup_id: sim.expected_sha256(backup_id)}


async def test_malformed_json_for_one_stack_leaves_the_others_archived(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """A stack whose listing is broken JSON fails alone; the other stacks are archived."""
    for uid in ("stack-a", "stack-bad", "stack-c"):
        sim.add_stack(uid)
        sim.add_backup(uid, size=100)
    sim.faults.malformed_json_stacks = {"stack-bad"}
    summary = await run_pass(settings_for(workspace, server, "stack-a", "stack-bad", "stack-c"))
    assert summary.exit_code == 1
    assert summary.archived == 2
    (failure,) = summary.failed
    assert failure.stack_uid == "stack-bad"
    assert "malformed" in failure.reason.lower()


async def test_download_that_keeps_failing_fails_only_that_backup(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Past the retry budget, the backup is failed (named), others archived, no .part left."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=1000)
    settings = settings_for(workspace, server, "stack-a", transfer={"max_retries": 1})
    sim.faults.blob_errors = 10
    summary = await run_pass(settings)
    assert summary.exit_code == 1
    assert summary.failed[0].backup_id is not None
    assert not list(workspace.archive.rglob("*.part"))
    sim.faults.blob_errors = 0
    assert (await run_pass(settings)).exit_code == 0


async def test_full_disk_fails_the_big_backup_and_keeps_the_small_ones(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, tiny_disk: Path
) -> None:
    """ENOSPC is permanent for that backup: its partial data is removed and the others fit."""
    sim.add_stack("stack-a")
    big = sim.add_backup("stack-a", database_name="big", size=3 * 1024 * 1024)
    small = sim.add_backup("stack-a", database_name="small", size=20_000)
    workspace.archive = tiny_disk / "archive"
    summary = await run_pass(settings_for(workspace, server, "stack-a"))

    assert summary.exit_code == 1
    (failure,) = summary.failed
    assert failure.backup_id == big
    assert "no space left on" in failure.reason
    assert list(archived_sha256s(workspace.archive)) == [small]
    assert not list(workspace.archive.rglob("*.part"))

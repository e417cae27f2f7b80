"""Resume across restarts: a download cut by kill -9 goes on from what is durable, on every
backend, fetching each byte about once; what changed upstream or is no longer due goes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from archiver.simulator import Simulator, SimulatorServer
from archiver.state.store import StateStore
from tests.archive_backends import ArchiveBackend
from tests.conftest import TOKEN, Workspace, run_cli, start_cli

MiB = 1024 * 1024
SIZE = 14 * MiB  # four parts of 4 MiB (the last 2 MiB)


@pytest.fixture
def big_sim(tmp_path: Path) -> Simulator:
    """A simulator whose backups split in 4 MiB parts."""
    return Simulator(token=TOKEN, blob_dir=tmp_path / "blobs", part_size=4 * MiB)


async def _wait_for(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _kill_mid_transfer(
    config: str, sim: Simulator, after_bytes: int, archive: Path | None = None
) -> None:
    """Start a pass and kill -9 it once the simulator served `after_bytes` (and, given a
    local `archive`, once that much sits in its unfinished file)."""
    process = await start_cli("--config", config, "sync")

    def far_enough() -> bool:
        if archive is not None:
            parts = list(archive.rglob("*.part"))
            return bool(parts) and parts[0].stat().st_size >= after_bytes
        return sim.stats.bytes_served >= after_bytes

    await _wait_for(far_enough)
    process.kill()
    await process.wait()


def _age_key(folder: Path) -> tuple[Path, str]:
    key = folder / "age.key"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    public = subprocess.run(
        ["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True
    ).stdout.strip()
    return key, public


def _age_decrypt(key: Path, sealed: bytes) -> bytes:
    return subprocess.run(
        ["age", "-d", "-i", str(key)], input=sealed, capture_output=True, check=True
    ).stdout


def _archived(sim: Simulator, backup_id: int, tar: bytes) -> bool:
    return tar == b"".join(path.read_bytes() for path in sim.backup_content_path(backup_id))


async def test_kill_9_mid_transfer_resumes_from_the_durable_bytes_on_every_backend(
    big_sim: Simulator, workspace: Workspace, archive_backend: ArchiveBackend
) -> None:
    """Killed in part 2 of 4: the next pass reads back what is durable and fetches the rest."""
    sim = big_sim
    backup_id = sim.add_backup("stack-a", database_name="shop", size=SIZE)
    sim.faults.slow_downloads = 100
    sim.faults.slow_bytes_per_second = 4 * MiB
    async with SimulatorServer(sim) as server:
        config = str(workspace.write_config(
            server.base_url, [{"uid": "stack-a"}], storage=archive_backend.storage,
            transfer={"max_concurrent_downloads": 1},
        ))
        await _kill_mid_transfer(config, sim, after_bytes=7 * MiB)
        sim.faults.slow_downloads = 0
        result = await run_cli("--config", config, "sync")
    assert result.code == 0, result.stderr
    assert "resuming an unfinished upload" in result.stderr
    [tar] = [k for k in await archive_backend.keys() if k.endswith("/shop.tar")]
    assert _archived(sim, backup_id, await archive_backend.read(tar))
    refetched = sim.stats.bytes_served - SIZE  # over both passes: what was fetched twice
    # Lost per interruption: what was in flight (the chunks in the lanes and the socket);
    # on S3 also the part being filled (5 MiB parts): only whole parts are durable there.
    allowed = (5 if archive_backend.name == "s3" else 0) * MiB + 4 * MiB
    assert refetched <= allowed, refetched
    manifest_key = tar.replace("shop.tar", "manifest.json")
    manifest = json.loads(await archive_backend.read(manifest_key))
    assert manifest["sha256"] == sim.expected_sha256(backup_id)
    assert [p["sha256"] for p in manifest["parts"]] == [
        hashlib.sha256(path.read_bytes()).hexdigest() for path in sim.backup_content_path(backup_id)
    ]


async def test_a_file_that_changed_upstream_since_is_archived_afresh(
    big_sim: Simulator, workspace: Workspace
) -> None:
    """If-Range no longer matches: that pass fails the backup, the next archives it whole."""
    sim = big_sim
    taken = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
    backup_id = sim.add_backup("stack-a", size=6 * MiB, seed=1, backup_date=taken)
    sim.faults.slow_downloads = 100
    sim.faults.slow_bytes_per_second = 2 * MiB
    async with SimulatorServer(sim) as server:
        config = str(workspace.write_config(server.base_url, [{"uid": "stack-a"}]))
        await _kill_mid_transfer(config, sim, after_bytes=MiB, archive=workspace.archive)
        sim.faults.slow_downloads = 0
        sim.remove_backup(backup_id)
        sim.add_backup("stack-a", size=6 * MiB, seed=2, backup_id=backup_id, backup_date=taken)
        changed = await run_cli("--config", config, "sync")
        assert changed.code == 1, changed.stderr
        assert "changed upstream" in changed.stderr
        assert not list(workspace.archive.rglob("*.part"))
        again = await run_cli("--config", config, "sync")
    assert again.code == 0, again.stderr
    [tar] = list(workspace.archive.rglob("*.tar"))
    assert _archived(sim, backup_id, tar.read_bytes())


async def test_leftovers_of_a_backup_no_longer_due_are_removed(
    big_sim: Simulator, workspace: Workspace
) -> None:
    """Cloud 66 stopped listing the backup: its unfinished upload and record go."""
    sim = big_sim
    backup_id = sim.add_backup("stack-a", size=6 * MiB)
    sim.faults.slow_downloads = 100
    sim.faults.slow_bytes_per_second = 2 * MiB
    async with SimulatorServer(sim) as server:
        config = str(workspace.write_config(server.base_url, [{"uid": "stack-a"}]))
        await _kill_mid_transfer(config, sim, after_bytes=MiB)
        assert list(workspace.archive.rglob("*.part"))
        sim.remove_backup(backup_id)
        result = await run_cli("--config", config, "sync")
    assert result.code == 0, result.stderr
    assert not list(workspace.archive.rglob("*.part"))
    state = StateStore.open(workspace.state)
    try:
        assert state.transfers.all() == []
    finally:
        state.close()


async def test_an_encrypted_download_cut_by_kill_9_starts_over_and_succeeds(
    big_sim: Simulator, workspace: Workspace
) -> None:
    """Its file key died with the process: the next pass starts from byte 0, and succeeds."""
    sim = big_sim
    key, public = _age_key(workspace.root)
    backup_id = sim.add_backup("stack-a", size=6 * MiB)
    sim.faults.slow_downloads = 100
    sim.faults.slow_bytes_per_second = 2 * MiB
    async with SimulatorServer(sim) as server:
        config = str(workspace.write_config(
            server.base_url, [{"uid": "stack-a"}], encryption={"recipients": [public]}
        ))
        await _kill_mid_transfer(config, sim, after_bytes=MiB)
        sim.faults.slow_downloads = 0
        sim.stats.reset()
        result = await run_cli("--config", config, "sync")
    assert result.code == 0, result.stderr
    assert "resuming" not in result.stderr
    assert sim.stats.bytes_served >= 6 * MiB  # from byte 0 (the killed socket adds a tail)
    [sealed] = list(workspace.archive.rglob("*.tar.age"))
    assert _archived(sim, backup_id, _age_decrypt(key, sealed.read_bytes()))


async def test_kill_9_during_a_wide_transfer_resumes_from_the_durable_bytes(
    big_sim: Simulator, workspace: Workspace, archive_backend: ArchiveBackend
) -> None:
    """Killed while four streams fetch 1 MiB ranges of 4 MiB parts side by side: the next
    pass goes on from what storage holds, losing at most what was in flight."""
    sim = big_sim
    backup_id = sim.add_backup("stack-a", database_name="shop", size=SIZE)
    sim.connection_rate = MiB  # per connection: four streams make it about 4 MiB/s
    async with SimulatorServer(sim) as server:
        config = str(workspace.write_config(
            server.base_url, [{"uid": "stack-a"}], storage=archive_backend.storage,
            transfer={"streams_per_file": 4, "segment_size": "1MiB", "in_flight": "4MiB"},
        ))
        # Late enough that a whole 5 MiB part is durable on S3 (the writer trails the
        # bytes served by up to the in-flight budget).
        await _kill_mid_transfer(config, sim, after_bytes=10 * MiB)
        sim.connection_rate = None
        result = await run_cli("--config", config, "sync")
    assert result.code == 0, result.stderr
    assert "resuming an unfinished upload" in result.stderr
    [tar] = [k for k in await archive_backend.keys() if k.endswith("/shop.tar")]
    assert _archived(sim, backup_id, await archive_backend.read(tar))
    refetched = sim.stats.bytes_served - SIZE
    # In flight when killed: at most the budget (4 MiB) and the first reads of the GETs
    # open then; on S3 also the part being filled (5 MiB parts).
    allowed = (5 if archive_backend.name == "s3" else 0) * MiB + 6 * MiB
    assert refetched <= allowed, refetched

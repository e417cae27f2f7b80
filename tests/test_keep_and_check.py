"""prune, verify and restore on every backend (local, S3, SFTP), driven as a user drives them."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from archiver.simulator import Simulator, SimulatorServer
from tests.archive_backends import ArchiveBackend
from tests.conftest import Workspace, run_cli

DAY = timedelta(days=1)
START = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


def _config(
    workspace: Workspace, server: SimulatorServer, backend: ArchiveBackend, **sections: Any
) -> str:
    path = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}], storage=backend.storage, **sections
    )
    return str(path)


def _eight_daily_backups(sim: Simulator) -> list[int]:
    """Eight backups, one a day from Friday 2026-11-20 to Friday 2026-11-27."""
    return [
        sim.add_backup("stack-a", size=3000 + day, backup_date=START + day * DAY)
        for day in range(8)
    ]


async def _sync(config: str) -> None:
    result = await run_cli("--config", config, "sync")
    assert result.code == 0, result.stderr


async def test_prune_keeps_the_policy_and_never_downloads_a_pruned_backup_again(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, archive_backend: ArchiveBackend
) -> None:
    """Dry run changes nothing; prune leaves tombstones; neither a pass nor a rebuild re-fetches."""
    ids = _eight_daily_backups(sim)
    config = _config(workspace, server, archive_backend,
                     retention={"keep_last": 2, "keep_weekly": 2})
    await _sync(config)
    before = await archive_backend.keys()

    dry = await run_cli("--config", config, "prune", "--dry-run", "--json")
    assert dry.code == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] is True
    kept = {entry["backup_id"]: entry["reasons"] for entry in plan["keep"]}
    assert kept == {ids[7]: ["weekly 2026-W48", "last 1"], ids[6]: ["last 2"],
                    ids[2]: ["weekly 2026-W47"]}
    removed = {entry["backup_id"] for entry in plan["remove"]}
    assert removed == set(ids) - set(kept)
    assert set(plan["remove"][0]) == {"stack_uid", "backup_id", "db_type", "database_name",
                                      "backup_date", "storage", "locked_until"}
    assert plan["remove"][0]["storage"] == "default"
    assert plan["remove"][0]["locked_until"] is None
    assert await archive_backend.keys() == before

    done = await run_cli("--config", config, "prune", "--json")
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout)["dry_run"] is False
    keys = await archive_backend.keys()
    assert sum(key.endswith("/manifest.json") for key in keys) == 3
    assert sum(key.endswith("/pruned.json") for key in keys) == 5
    assert sum(key.endswith(".tar") for key in keys) == 3

    sim.stats.reset()
    await _sync(config)
    shutil.rmtree(workspace.state)
    await _sync(config)  # the state is rebuilt from storage, tombstones included
    assert sim.stats.downloads_started == 0
    status = json.loads((await run_cli("--config", config, "status", "--json")).stdout)
    assert {entry["backup_id"] for entry in status["archived"]} == set(kept)
    assert status["pruned"] == 5


async def test_verify_names_a_flipped_bit_a_cut_and_a_missing_file(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, archive_backend: ArchiveBackend
) -> None:
    """Each damage is reported by stack, backup id, location and what is wrong; exit 1."""
    ids = [sim.add_backup("stack-a", size=5000, backup_date=START + n * DAY) for n in range(4)]
    config = _config(workspace, server, archive_backend)
    await _sync(config)
    clean = await run_cli("--config", config, "verify", "--json")
    assert clean.code == 0, clean.stderr
    assert json.loads(clean.stdout)["ok"] is True

    tars = sorted(key for key in await archive_backend.keys() if key.endswith(".tar"))
    await archive_backend.flip_a_bit(tars[0], at=2500)
    await archive_backend.cut(tars[1], keep=4000)
    await archive_backend.delete(tars[2])
    result = await run_cli("--config", config, "verify", "--json")
    assert result.code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    problems = {entry["backup_id"]: entry for entry in report["checked"]}
    assert problems[ids[0]]["problem"] == "sha256 differs from the manifest"
    assert problems[ids[1]]["problem"] == "short: 4000 bytes, the manifest says 5000"
    assert problems[ids[2]]["problem"] == "the archived file is missing"
    assert problems[ids[3]]["ok"] is True
    assert problems[ids[0]]["location"].endswith(tars[0])
    assert all(entry["stack_uid"] == "stack-a" for entry in report["checked"])

    status = json.loads((await run_cli("--config", config, "status", "--json")).stdout)
    assert status["last_verify"]["failed"] == 3
    assert status["stacks"][0]["corrupt"] == 3
    table = await run_cli("--config", config, "status")
    assert "3 corrupt" in table.stdout


async def test_restore_streams_back_exactly_what_cloud66_made(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, archive_backend: ArchiveBackend,
    tmp_path: Path,
) -> None:
    """To a file and to stdout the bytes are the simulator's; a corrupt copy leaves no file."""
    good = sim.add_backup("stack-a", size=700_000, backup_date=START)  # three parts
    bad = sim.add_backup("stack-a", size=5000, backup_date=START + DAY)
    config = _config(workspace, server, archive_backend)
    await _sync(config)

    target = tmp_path / "restored.tar"
    result = await run_cli("--config", config, "restore", str(good), "--output", str(target))
    assert result.code == 0, result.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == sim.expected_sha256(good)
    assert target.stat().st_mode & 0o777 == 0o600

    piped = await run_cli("--config", config, "restore", str(good), "-o", "-")
    assert piped.code == 0, piped.stderr
    assert hashlib.sha256(piped.stdout_bytes).hexdigest() == sim.expected_sha256(good)
    assert "backup restored" in piped.stderr  # logs go to stderr, never into the data

    [bad_tar] = [k for k in await archive_backend.keys() if f"_{bad}/" in k and k.endswith(".tar")]
    await archive_backend.flip_a_bit(bad_tar)
    spoilt = tmp_path / "spoilt.tar"
    result = await run_cli("--config", config, "restore", str(bad), "--output", str(spoilt))
    assert result.code == 1
    assert "sha256 differs from the manifest" in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir() if "spoilt" in path.name) == []


async def test_verify_deep_reads_every_tar_and_catches_a_cut_one(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, archive_backend: ArchiveBackend
) -> None:
    """--deep passes whole tars (multi-part ones too) and fails one cut at a member boundary."""
    whole = sim.add_backup("stack-a", size=700_000, backup_date=START)  # three parts
    cut = sim.add_backup("stack-a", size=50_000, backup_date=START + DAY)
    config = _config(workspace, server, archive_backend)
    await _sync(config)
    assert (await run_cli("--config", config, "verify", "--deep")).code == 0

    [cut_tar] = [k for k in await archive_backend.keys() if f"_{cut}/" in k and k.endswith(".tar")]
    # Cut right after the member's padded data: the end-of-archive zeros are gone.
    await archive_backend.cut(cut_tar, keep=512 + -(-(50_000 - 2048) // 512) * 512)
    # ...and pretend the manifest always said so: only the tar check can tell.
    manifest_key = cut_tar.rpartition("/")[0] + "/manifest.json"
    manifest = json.loads(await archive_backend.read(manifest_key))
    shortened = await archive_backend.read(cut_tar)
    manifest["size"] = len(shortened)
    manifest["sha256"] = hashlib.sha256(shortened).hexdigest()
    await archive_backend.write(manifest_key, json.dumps(manifest).encode())

    shallow = await run_cli("--config", config, "verify", "--json")
    assert shallow.code == 0  # size and sha256 match the (edited) manifest
    deep = await run_cli("--config", config, "verify", "--deep", "--json")
    assert deep.code == 1
    problems = {e["backup_id"]: e["problem"] for e in json.loads(deep.stdout)["checked"]}
    assert problems[whole] is None
    assert "without the end-of-archive marker" in problems[cut]

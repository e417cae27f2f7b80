"""Where restore writes: never over a file unasked, into a folder by name, and a reader of
stdout that stops early (`| head`) is no error; the same for every command writing stdout."""

from __future__ import annotations

import asyncio
import shlex
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from archiver.lifecycle.restore import plaintext_name
from archiver.model.manifest import ArchivedBackup
from archiver.simulator import Simulator, SimulatorServer
from tests.conftest import REPO_ROOT, Workspace, cli_env, file_sha256, run_cli


async def _archived(sim: Simulator, server: SimulatorServer, workspace: Workspace, size: int):  # type: ignore[no-untyped-def]
    """One `shop` backup of `size` bytes, archived; returns (config, backup id)."""
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", database_name="shop", size=size)
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}])
    assert (await run_cli("--config", str(config), "sync")).code == 0
    return str(config), backup_id


async def test_an_existing_output_file_is_refused_without_force(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, tmp_path: Path
) -> None:
    """`-o FILE` over an existing file exits 2 and leaves it as it was; --force replaces it."""
    config, backup_id = await _archived(sim, server, workspace, 5000)
    target = tmp_path / "mine.tar"
    target.write_bytes(b"precious")
    refused = await run_cli("--config", config, "restore", str(backup_id), "-o", str(target))
    assert refused.code == 2
    assert f"--output {target} exists" in refused.stderr
    assert "--force" in refused.stderr
    assert target.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    forced = await run_cli(
        "--config", config, "restore", str(backup_id), "-o", str(target), "--force"
    )
    assert forced.code == 0, forced.stderr
    assert file_sha256(target) == sim.expected_sha256(backup_id)


async def test_a_folder_as_output_gets_the_backup_by_its_plaintext_name(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, tmp_path: Path
) -> None:
    """`-o DIR` writes DIR/<database_name>.tar; a second time it is refused (exit 2)."""
    config, backup_id = await _archived(sim, server, workspace, 5000)
    folder = tmp_path / "restores"
    folder.mkdir()
    first = await run_cli("--config", config, "restore", str(backup_id), "-o", str(folder))
    assert first.code == 0, first.stderr
    assert [p.name for p in folder.iterdir()] == ["shop.tar"]
    assert file_sha256(folder / "shop.tar") == sim.expected_sha256(backup_id)
    again = await run_cli("--config", config, "restore", str(backup_id), "-o", str(folder))
    assert again.code == 2
    assert str(folder / "shop.tar") in again.stderr
    assert "unexpected" not in again.stderr


def test_the_plaintext_name_drops_the_encryption_suffix() -> None:
    """An encrypted backup stored as shop.tar.age restores as shop.tar."""
    record = ArchivedBackup(
        stack_uid="s", backup_id=1, db_type="mysql", database_name="shop", size=1,
        sha256="0" * 64, archived_at="2025-01-01T00:00:00Z",
        tar_key="s/mysql/shop/2025-01-01T000000Z_1/shop.tar.age",
        manifest_key="s/mysql/shop/2025-01-01T000000Z_1/manifest.json", backup_date=None,
    )
    assert plaintext_name(record) == "shop.tar"


async def _piped(*args: str, reader: str, stderr_file: Path) -> tuple[int, str]:
    """`c66-archiver ARGS | READER`: the archiver's exit status and its stderr."""
    command = " ".join(shlex.quote(part) for part in (sys.executable, "-m", "archiver", *args))
    script = (
        f"{command} 2>{shlex.quote(str(stderr_file))} | {reader} >/dev/null; "
        "echo ${PIPESTATUS[0]}"
    )
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", script, stdout=asyncio.subprocess.PIPE, env=cli_env(), cwd=REPO_ROOT,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 120)
    return int(stdout.decode().strip()), stderr_file.read_text()


async def test_a_reader_that_stops_early_ends_restore_quietly(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, tmp_path: Path
) -> None:
    """`restore ID -o - | head -c10` exits 141 (or 0), and never says the data is bad.

    10 MiB: the reader leaves with most of the file still to stream, so the storage's
    read is still open when the pipe closes (and must be closed before its threads)."""
    config, backup_id = await _archived(sim, server, workspace, 10 * 1024 * 1024)
    code, stderr = await _piped(
        "--config", config, "restore", str(backup_id), "-o", "-", reader="head -c10",
        stderr_file=tmp_path / "stderr",
    )
    assert code in (141, 0), stderr
    assert "does not match" not in stderr
    assert "error" not in stderr.lower()
    assert "Traceback" not in stderr


async def test_status_piped_into_head_ends_quietly(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, tmp_path: Path
) -> None:
    """`status --json | head -c5` and `status --all | head -1`: no BrokenPipeError, exit 141/0."""
    sim.add_stack("stack-a")
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for day in range(300):  # a document far larger than a pipe's buffer
        sim.add_backup("stack-a", size=10, backup_date=start + timedelta(days=day))
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}])
    assert (await run_cli("--config", str(config), "sync")).code == 0
    for args, reader in ((("status", "--json"), "head -c5"), (("status", "--all"), "head -1")):
        code, stderr = await _piped(
            "--config", str(config), *args, reader=reader, stderr_file=tmp_path / "stderr"
        )
        assert code in (141, 0), stderr
        assert "BrokenPipeError" not in stderr
        assert "unexpected" not in stderr
        assert "Exception ignored" not in stderr

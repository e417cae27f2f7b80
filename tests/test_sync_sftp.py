"""Full passes against the simulator with the archive on a real sshd: layout, faults, rebuild."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from archiver.config.settings import Settings, load_settings
from archiver.model.summary import PassSummary
from archiver.simulator import Simulator, SimulatorServer
from archiver.sync.oneshot import archive_once
from loopback.sshd import SftpServer
from tests.conftest import (
    PART_SIZE,
    TOKEN,
    Workspace,
    file_sha256,
    run_cli,
    start_cli,
    wait_until,
)

MiB = 1024 * 1024


def _settings(
    workspace: Workspace, server: SimulatorServer, sftp_server: SftpServer, remote: Path
) -> Settings:
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}], storage=sftp_server.storage_table(remote)
    )
    return load_settings(config)


async def _pass(settings: Settings) -> PassSummary:
    return await archive_once(settings, TOKEN, show_progress=False)


def _manifests(remote: Path) -> dict[int, dict[str, Any]]:
    """The manifests on the server's disk, by backup id."""
    found = (json.loads(path.read_text()) for path in remote.rglob("manifest.json"))
    return {int(manifest["backup_id"]): manifest for manifest in found}


async def test_a_pass_archives_single_and_multi_part_backups_over_sftp(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, sftp_server: SftpServer,
    sftp_folder: Path,
) -> None:
    """Both kinds of backup land at the contract's paths, hash-checked, manifests last."""
    remote = sftp_folder / "archive"
    single = sim.add_backup("stack-a", database_name="shop", size=5000)
    multi = sim.add_backup("stack-a", db_type="postgresql", database_name="big",
                           size=PART_SIZE * 3 + 12345)
    summary = await _pass(_settings(workspace, server, sftp_server, remote))

    assert (summary.exit_code, summary.archived) == (0, 2)
    manifests = _manifests(remote)
    for backup_id, name in ((single, "shop"), (multi, "big")):
        [tar] = remote.rglob(f"{name}.tar")
        assert tar.parent.parent.parent.relative_to(remote).parts[0] == "stack-a"
        assert tar.parent.name.endswith(f"_{backup_id}")
        expected = sim.expected_sha256(backup_id)
        assert file_sha256(tar) == expected == manifests[backup_id]["sha256"]
        assert (tar.parent / "manifest.json").is_file()
    assert [part["id"] for part in manifests[multi]["parts"]] == [
        "tar-aa", "tar-ab", "tar-ac", "tar-ad"
    ]
    assert not list(remote.rglob("*.part"))


async def test_a_second_pass_downloads_nothing(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, sftp_server: SftpServer,
    sftp_folder: Path,
) -> None:
    """With everything archived on the server, the next pass fetches no bytes."""
    for _ in range(3):
        sim.add_backup("stack-a", size=2000)
    settings = _settings(workspace, server, sftp_server, sftp_folder / "archive")
    assert (await _pass(settings)).archived == 3
    sim.stats.reset()

    second = await _pass(settings)

    assert (second.exit_code, second.archived) == (0, 0)
    assert sim.stats.downloads_started == 0


async def test_a_cut_download_still_ends_with_the_right_bytes(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, sftp_server: SftpServer,
    sftp_folder: Path,
) -> None:
    """A download dropped mid-body is resumed; the SFTP file's sha256 is still the backup's."""
    remote = sftp_folder / "archive"
    backup_id = sim.add_backup("stack-a", database_name="db", size=PART_SIZE * 2 + 999)
    sim.faults.cut_downloads = 1

    summary = await _pass(_settings(workspace, server, sftp_server, remote))

    assert (summary.exit_code, summary.archived) == (0, 1)
    assert sim.faults.cut_downloads == 0
    [tar] = remote.rglob("db.tar")
    assert file_sha256(tar) == sim.expected_sha256(backup_id)
    assert not list(remote.rglob("*.part"))


async def test_check_config_probes_the_sftp_target(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, sftp_server: SftpServer,
    sftp_folder: Path,
) -> None:
    """`check-config` writes, reads back and deletes a probe over SFTP, and exits 0, with no
    library warning about DSA keys (asyncssh's, at import) on stderr."""
    sim.add_stack("stack-a")
    _settings(workspace, server, sftp_server, sftp_folder / "archive")

    result = await run_cli("--config", str(workspace.config), "check-config")

    assert result.code == 0, result.stderr
    assert f"sftp://{sftp_server.username}@127.0.0.1:{sftp_server.port}" in result.stdout
    assert not [path for path in (sftp_folder / "archive").rglob("*") if path.is_file()]
    assert "Warning" not in result.stderr


async def test_a_killed_process_leaves_nothing_visible_and_the_next_pass_finishes(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, sftp_server: SftpServer,
    sftp_folder: Path,
) -> None:
    """kill -9 mid-upload leaves only a .part; the next pass removes it and archives whole."""
    remote = sftp_folder / "archive"
    backup_id = sim.add_backup("stack-a", database_name="db", size=PART_SIZE * 4)
    _settings(workspace, server, sftp_server, remote)
    sim.faults.slow_downloads = 10
    sim.faults.slow_bytes_per_second = 200_000
    process = await start_cli("--config", str(workspace.config), "sync")
    try:
        while not list(remote.rglob("*.part")) or sim.stats.bytes_served < PART_SIZE // 2:
            assert process.returncode is None, "the pass ended before it could be killed"
            await asyncio.sleep(0.05)
        assert not list(remote.rglob("db.tar"))
    finally:
        process.send_signal(signal.SIGKILL)
        await process.communicate()
    sim.faults.slow_downloads = 0

    result = await run_cli("--config", str(workspace.config), "sync")

    assert result.code == 0, result.stderr
    [tar] = remote.rglob("db.tar")
    assert file_sha256(tar) == sim.expected_sha256(backup_id)
    assert not list(remote.rglob("*.part"))


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "age"])
async def test_a_stalled_sftp_server_stops_the_download_instead_of_buffering_it(
    workspace: Workspace, sftp_server: SftpServer, sftp_folder: Path, tmp_path: Path,
    encrypted: bool,
) -> None:
    """The server stops taking bytes mid-pass: the download stops with it (what was served
    stays far below the backup's size, so it is not held in memory), through the age
    encryptor too; once the server goes on, the pass ends with the right bytes."""
    size = 128 * MiB
    sim = Simulator(token=TOKEN, blob_dir=tmp_path / "blobs", part_size=size + 1)
    remote = sftp_folder / "archive"
    backup_id = sim.add_backup("stack-a", database_name="db", size=size)
    # Paced (far above what SFTP takes) so that the simulator counts bytes as they go out.
    sim.faults.slow_downloads, sim.faults.slow_bytes_per_second = 1, 1024 * MiB
    key = _age_key(tmp_path) if encrypted else None
    async with SimulatorServer(sim) as server:
        workspace.write_config(
            server.base_url, [{"uid": "stack-a"}], storage=sftp_server.storage_table(remote),
            **({"encryption": {"recipients": [key[1]], "engine": "age"}} if key else {}),
        )
        process = await start_cli("--config", str(workspace.config), "sync")
        try:
            await wait_until(lambda: _part_size(remote) >= 4 * MiB)
            with sftp_server.stalled():
                served = await _settled(lambda: sim.stats.bytes_served)
                assert served < size // 2, served
            _, stderr = await asyncio.wait_for(process.communicate(), 120)
        finally:
            if process.returncode is None:
                process.kill()
                await process.communicate()
    assert process.returncode == 0, stderr.decode(errors="replace")
    [stored] = remote.rglob("db.tar.age" if key else "db.tar")
    digest = _decrypted_sha256(key[0], stored) if key else file_sha256(stored)
    assert digest == sim.expected_sha256(backup_id)


def _age_key(folder: Path) -> tuple[Path, str]:
    if shutil.which("age") is None:
        pytest.skip("the age CLI is missing")
    key = folder / "age.key"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True,
                            text=True).stdout.strip()
    return key, public


def _decrypted_sha256(key: Path, sealed: Path) -> str:
    """sha256 of what `age -d` makes of `sealed`, streamed."""
    digest = hashlib.sha256()
    with subprocess.Popen(["age", "-d", "-i", str(key), str(sealed)],
                          stdout=subprocess.PIPE) as age:
        assert age.stdout is not None
        while chunk := age.stdout.read(MiB):
            digest.update(chunk)
    assert age.returncode == 0
    return digest.hexdigest()


def _part_size(remote: Path) -> int:
    return sum(path.stat().st_size for path in remote.rglob("*.part")) if remote.exists() else 0


async def _settled(value: Callable[[], int], still_for: float = 1.5) -> int:
    """The value once it stopped changing for `still_for` seconds (at most 60 s of waiting)."""
    loop = asyncio.get_running_loop()
    deadline, last, since = loop.time() + 60, value(), loop.time()
    while loop.time() - since < still_for:
        assert loop.time() < deadline, "the value kept changing"
        await asyncio.sleep(0.1)
        if value() != last:
            last, since = value(), loop.time()
    return last

"""A destination that runs out of room: no final-named data without its manifest, no partial
upload that starves the other backups, and with room again the next pass archives the rest.

Local and SFTP storage run on a real tiny tmpfs (the SFTP one owned by the server's user);
S3 (SeaweedFS) behind a proxy that answers manifest writes as a full MinIO does.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from archiver.simulator import Simulator, SimulatorServer
from loopback.seaweedfs import S3Server
from loopback.sshd import SftpServer
from tests.archive_backends import s3_backend
from tests.conftest import (
    Workspace,
    archived_sha256s,
    run_cli,
    run_pass,
    settings_for,
    start_cli,
)
from tests.s3_fault_proxy import S3FaultProxy, is_manifest_put
from tests.tmpfs import mount_tmpfs, unmount

MiB = 1024 * 1024


@dataclass
class TinyDestination:
    """A destination with room for 1 MiB of data (S3: for no manifest), and a way to grow it."""

    name: str
    storage: dict[str, Any]
    files: Callable[[], Awaitable[list[str]]]
    make_room: Callable[[], None]
    root: Path | None = None  # on this machine's disk (local, and SFTP's server)


def mount_sized_tmpfs(mount_point: Path, size: str, owner: tuple[int, int] | None = None) -> None:
    """Mount a tmpfs of `size` (owned by `owner`'s uid, gid), or skip where that is refused."""
    options = f"size={size}" + (f",mode=0700,uid={owner[0]},gid={owner[1]}" if owner else "")
    mount_tmpfs(mount_point, options)


def grow_tmpfs(mount_point: Path, size: str) -> None:
    """Give a mounted tmpfs more room, keeping what it holds."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount_point)], check=True)


def files_under(root: Path) -> list[str]:
    """Every file under `root`, relative, sorted (parts and temporaries included)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@dataclass
class _S3Bucket:
    server: S3Server
    bucket: str
    secret_file: Path


def tmpfs_destination(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str, size: str
) -> TinyDestination:
    """A local or SFTP destination on a real tmpfs of `size`, unmounted after the test."""
    owner: tuple[int, int] | None = None
    base = tmp_path
    if kind == "sftp":
        sshd: SftpServer = request.getfixturevalue("sftp_server")
        base = request.getfixturevalue("sftp_folder")
        owner = (sshd.uid, sshd.gid)
    disk = base / "disk"
    mount_sized_tmpfs(disk, size, owner)
    request.addfinalizer(lambda: unmount(disk))
    root = disk / "archive"
    storage = sshd.storage_table(root) if owner else {"type": "local", "path": str(root)}

    async def files() -> list[str]:
        return files_under(root)

    return TinyDestination(kind, storage, files, lambda: grow_tmpfs(disk, "16m"), root)


@pytest.fixture(params=["local", "sftp", "s3"])
def tiny_backend(request: pytest.FixtureRequest, tmp_path: Path) -> TinyDestination | _S3Bucket:
    """Each backend in turn: local and SFTP on a mounted 1 MiB tmpfs, S3 as a bucket."""
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        secret_file = tmp_path / "s3-secret"
        secret_file.write_text(server.secret_key + "\n")
        return _S3Bucket(server, request.getfixturevalue("s3_bucket"), secret_file)
    return tmpfs_destination(request, tmp_path, request.param, "1m")


@pytest.fixture
async def tiny_destination(
    tiny_backend: TinyDestination | _S3Bucket,
) -> AsyncIterator[TinyDestination]:
    """Each backend with room for 1 MiB of data, then none: a real full tmpfs for local and
    SFTP, a proxy answering 507 to manifest writes for S3."""
    if isinstance(tiny_backend, TinyDestination):
        yield tiny_backend
        return
    bucket = tiny_backend
    backend = s3_backend(bucket.server, bucket.bucket, bucket.secret_file)
    async with S3FaultProxy(bucket.server.endpoint_url) as proxy:
        proxy.refuse = is_manifest_put

        def stop_refusing() -> None:
            proxy.refuse = None

        storage = {**backend.storage, "endpoint_url": proxy.url}
        yield TinyDestination("s3", storage, backend.keys, stop_refusing)


async def test_a_manifest_that_cannot_be_written_leaves_no_final_named_data(
    sim: Simulator, server: SimulatorServer, workspace: Workspace,
    tiny_destination: TinyDestination,
) -> None:
    """The data fits and is committed, its manifest does not fit: the commit is taken back
    (no tar under its final name, no manifest, no .part), the pass exits 1 saying the disk
    is full; with room again the next pass archives the backup."""
    backup_id = sim.add_backup("stack-a", database_name="db", size=MiB)  # the 1 MiB exactly
    settings = settings_for(workspace, server, "stack-a", storage=tiny_destination.storage)
    with capture_logs() as logs:
        summary = await run_pass(settings)

    assert summary.exit_code == 1
    (failure,) = summary.failed
    assert failure.backup_id == backup_id
    assert "no space left on" in failure.reason
    assert "manifest.json" in failure.reason  # the data was whole: only its manifest failed
    taken_back = [e for e in logs if e["event"].startswith("an unfinished commit was taken back")]
    assert len(taken_back) == 1
    assert await tiny_destination.files() == []

    tiny_destination.make_room()
    assert (await run_pass(settings)).exit_code == 0
    names = [key.rsplit("/", 1)[-1] for key in await tiny_destination.files()]
    assert sorted(names) == ["db.tar", "manifest.json"]


@pytest.fixture
async def s3_proxy(s3_server: S3Server) -> AsyncIterator[S3FaultProxy]:
    """The fault proxy in front of the session's SeaweedFS."""
    async with S3FaultProxy(s3_server.endpoint_url) as proxy:
        yield proxy


async def _killed_between_data_and_manifest(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, s3_server: S3Server,
    bucket: str, proxy: S3FaultProxy,
) -> tuple[str, Callable[[], Awaitable[list[str]]], int]:
    """A pass (a real process) kill -9'd while its manifest PUT is held by the proxy: the
    data is under its final name, the manifest never reaches the server. Returns the config,
    a lister of the bucket's keys, and the backup's id."""
    secret_file = workspace.root / "s3-secret"
    secret_file.write_text(s3_server.secret_key + "\n")
    backend = s3_backend(s3_server, bucket, secret_file)
    storage = {**backend.storage, "endpoint_url": proxy.url}
    backup_id = sim.add_backup("stack-a", database_name="db", size=3 * 256 * 1024 + 5)
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}], storage=storage)
    proxy.hold = is_manifest_put
    process = await start_cli("--config", str(config), "sync")
    await asyncio.wait_for(proxy.held.wait(), 60)
    names = [key.rsplit("/", 1)[-1] for key in await backend.keys()]
    assert names == ["db.tar"]  # the moment the contract must not let outlast the pass
    process.kill()
    await process.wait()
    proxy.release(forward=False)  # the held PUT dies with its client
    return str(config), backend.keys, backup_id


async def test_kill_9_between_the_data_and_its_manifest_is_finished_by_the_next_pass(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, s3_server: S3Server,
    s3_bucket: str, s3_proxy: S3FaultProxy,
) -> None:
    """A pass killed after its data reached the final name and before the manifest did:
    the next pass writes the manifest it recorded, downloading nothing, even though Cloud 66
    no longer lists the backup; it is archived with its sha256."""
    config, keys, backup_id = await _killed_between_data_and_manifest(
        sim, server, workspace, s3_server, s3_bucket, s3_proxy
    )
    sha256 = sim.expected_sha256(backup_id)
    sim.remove_backup(backup_id)  # rotated away upstream meanwhile
    sim.stats.reset()
    result = await run_cli("--config", config, "sync")

    assert result.code == 0, result.stderr
    assert sim.stats.downloads_started == 0
    names = sorted(key.rsplit("/", 1)[-1] for key in await keys())
    assert names == ["db.tar", "manifest.json"]
    status = json.loads((await run_cli("--config", config, "status", "--json")).stdout)
    [entry] = status["archived"]
    assert (entry["backup_id"], entry["sha256"]) == (backup_id, sha256)


async def test_kill_9_between_the_data_and_its_manifest_on_a_full_disk_is_cleaned(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, s3_server: S3Server,
    s3_bucket: str, s3_proxy: S3FaultProxy,
) -> None:
    """Killed the same way, but the manifest still finds no room: the next pass takes the
    data back out of its final name and fails the backup naming the full disk (Cloud 66 no
    longer lists it, so nothing else would ever clean it up)."""
    config, keys, backup_id = await _killed_between_data_and_manifest(
        sim, server, workspace, s3_server, s3_bucket, s3_proxy
    )
    sim.remove_backup(backup_id)
    s3_proxy.refuse = is_manifest_put
    result = await run_cli("--config", config, "sync")

    assert result.code == 1
    assert await keys() == []
    status = json.loads((await run_cli("--config", config, "status", "--json")).stdout)
    [failure] = status["last_run"]["failed"]
    assert failure["backup_id"] == backup_id
    assert "could not be finished: no space left on" in failure["reason"]


@pytest.fixture(params=["local", "sftp"])
def three_mib_disk(request: pytest.FixtureRequest, tmp_path: Path) -> TinyDestination:
    """A local or SFTP destination on a real 3 MiB tmpfs."""
    return tmpfs_destination(request, tmp_path, request.param, "3m")


async def _until(check: Callable[[], bool], timeout: float = 60) -> None:
    """Wait until `check()` holds (it only ever turns true), failing after `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_partial_that_fills_the_disk_does_not_starve_a_backup_that_fits(
    sim: Simulator, server: SimulatorServer, workspace: Workspace,
    three_mib_disk: TinyDestination,
) -> None:
    """A big backup's partial upload fills the disk while a small one writes: the small one
    runs out of room, then the big one does too and its partial is removed (never kept to
    resume), and the small one, tried again alone in the same pass, is archived. The pass
    exits 1 naming the full disk for the big one; with room, the next pass archives it."""
    big = sim.add_backup("stack-a", database_name="big", size=6 * MiB)  # 24 parts of 256 KiB
    small = sim.add_backup("stack-a", database_name="small", size=300_000)
    big_paused = sim.gate(big, 11)  # 11 parts written before it: 2.75 of the 3 MiB
    small_waits = sim.gate(small, 0)
    settings = settings_for(workspace, server, "stack-a", storage=three_mib_disk.storage)
    root = three_mib_disk.root
    assert root is not None

    def small_failed(logs: list[dict[str, Any]]) -> bool:
        return any(e.get("backup_id") == small and e["log_level"] != "info" for e in logs)

    with capture_logs() as logs:
        running = asyncio.create_task(run_pass(settings))
        await asyncio.wait_for(big_paused.arrived.wait(), 60)
        small_waits.opened.set()  # into the last 256 KiB, with the big partial in place
        await _until(lambda: small_failed(logs))
        big_paused.opened.set()  # the big one fills the disk and fails; its partial goes
        summary = await asyncio.wait_for(running, 120)

    assert summary.exit_code == 1
    (failure,) = summary.failed
    assert failure.backup_id == big
    assert "no space left on" in failure.reason
    assert archived_sha256s(root) == {small: sim.expected_sha256(small)}
    assert not list(root.rglob("*.part"))
    three_mib_disk.make_room()
    assert (await run_pass(settings)).exit_code == 0
    assert archived_sha256s(root) == {
        small: sim.expected_sha256(small), big: sim.expected_sha256(big)
    }

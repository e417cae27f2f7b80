"""Encryption at rest end to end: what storage holds is age ciphertext the age CLI opens."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from archiver.simulator import Simulator, SimulatorServer
from loopback.seaweedfs import S3Server
from tests.archive_backends import ArchiveBackend, s3_backend
from tests.conftest import PART_SIZE, Workspace, file_sha256, run_cli, start_cli, wait_until

AGE = shutil.which("age")
pytestmark = pytest.mark.skipif(AGE is None, reason="the age CLI is missing")


def _keys(folder: Path) -> tuple[Path, str, Path, str]:
    """An age identity and an OpenSSH key pair, made by age-keygen and ssh-keygen."""
    age_key = folder / "age.key"
    subprocess.run(["age-keygen", "-o", str(age_key)], check=True, capture_output=True)
    age_public = subprocess.run(
        ["age-keygen", "-y", str(age_key)], check=True, capture_output=True, text=True
    ).stdout.strip()
    ssh_key = folder / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh_key)], check=True)
    return age_key, age_public, ssh_key, (folder / "id_ed25519.pub").read_text().strip()


def _age_decrypt(identity: Path, sealed: bytes) -> bytes:
    assert AGE is not None
    return subprocess.run(
        [AGE, "-d", "-i", str(identity)], input=sealed, capture_output=True, check=True
    ).stdout


def _grown_past(archive: Path, size: int) -> bool:
    """An unfinished file in the archive holds more than `size` bytes."""
    return any(part.stat().st_size > size for part in archive.rglob("*.part"))


def _plaintext(sim: Simulator, backup_id: int) -> bytes:
    return b"".join(path.read_bytes() for path in sim.backup_content_path(backup_id))


async def test_stored_backups_are_age_files_that_decrypt_to_what_cloud66_made(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, archive_backend: ArchiveBackend
) -> None:
    """Both recipients open the stored .tar.age; manifest, verify and restore agree."""
    age_key, age_public, ssh_key, ssh_public = _keys(workspace.root)
    backup_id = sim.add_backup("stack-a", database_name="shop", size=PART_SIZE * 2 + 999)
    config = str(
        workspace.write_config(
            server.base_url,
            [{"uid": "stack-a"}],
            storage=archive_backend.storage,
            encryption={"recipients": [age_public, ssh_public]},
        )
    )
    assert (await run_cli("--config", config, "sync")).code == 0

    [stored_key] = [k for k in await archive_backend.keys() if k.endswith("/shop.tar.age")]
    stored = await archive_backend.read(stored_key)
    plaintext = _plaintext(sim, backup_id)
    assert stored.startswith(b"age-encryption.org/v1\n")
    assert _age_decrypt(age_key, stored) == plaintext
    assert _age_decrypt(ssh_key, stored) == plaintext
    manifest = json.loads(
        await archive_backend.read(stored_key.replace("shop.tar.age", "manifest.json"))
    )
    assert (manifest["size"], manifest["sha256"]) == (
        len(plaintext),
        sim.expected_sha256(backup_id),
    )
    assert manifest["stored_size"] == len(stored)
    assert manifest["file"] == "shop.tar.age"
    assert manifest["encryption"] == {"format": "age-v1", "recipients": [age_public, ssh_public]}

    assert (await run_cli("--config", config, "verify")).code == 0  # no key needed
    deep = await run_cli("--config", config, "verify", "--deep", "--identity", str(age_key))
    assert deep.code == 0, deep.stdout + deep.stderr
    no_key = await run_cli("--config", config, "verify", "--deep")
    assert no_key.code == 2
    assert "--identity" in no_key.stderr
    restored = workspace.root / "restored.tar"
    result = await run_cli(
        "--config",
        config,
        "restore",
        str(backup_id),
        "-o",
        str(restored),
        "--identity",
        str(ssh_key),
    )
    assert result.code == 0, result.stderr
    assert file_sha256(restored) == sim.expected_sha256(backup_id)


async def test_a_wrong_identity_is_one_clear_line(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """restore with a key the backup was not encrypted to: exit 2, one line, no file left."""
    _, age_public, ssh_key, _ = _keys(workspace.root)
    backup_id = sim.add_backup("stack-a", size=5000)
    config = str(
        workspace.write_config(
            server.base_url, [{"uid": "stack-a"}], encryption={"recipients": [age_public]}
        )
    )
    assert (await run_cli("--config", config, "sync")).code == 0
    target = workspace.root / "out.tar"
    result = await run_cli(
        "--config",
        config,
        "restore",
        str(backup_id),
        "-o",
        str(target),
        "--identity",
        str(ssh_key),
    )
    assert result.code == 2
    assert "cannot decrypt backup" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not target.exists()
    assert not list(workspace.root.glob(".out.tar.*"))


@pytest.mark.parametrize("engine", ["age", "pyrage"])
async def test_no_plaintext_reaches_storage_even_while_a_backup_streams(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, engine: str
) -> None:
    """Mid-transfer and after a kill -9, the unfinished file holds ciphertext only, and not
    a valid age file (no end was written); an age process does not outlive the archiver."""
    age_key, age_public, _, _ = _keys(workspace.root)
    # 30 s of streaming: the kill comes long before the end, however loaded the machine.
    backup_id = sim.add_backup("stack-a", size=3_000_000)
    sim.faults.slow_downloads = 1
    sim.faults.slow_bytes_per_second = 100_000
    config = str(
        workspace.write_config(
            server.base_url, [{"uid": "stack-a"}],
            encryption={"recipients": [age_public], "engine": engine},
        )
    )
    process = await start_cli("--config", config, "sync")
    deadline = time.monotonic() + 25
    while not _grown_past(workspace.archive, 200_000):
        if time.monotonic() > deadline:
            raise AssertionError("the unfinished file never grew past 200 kB")
        await asyncio.sleep(0.01)
    children = _children(process.pid)
    process.kill()
    await process.wait()
    await wait_until(lambda: not any(_alive(pid) for pid in children), timeout=10)
    [leftover] = list(workspace.archive.rglob("*.part"))
    assert leftover.name.endswith(".tar.age.part")
    written = leftover.read_bytes()
    assert written.startswith(b"age-encryption.org/v1\n")
    plaintext = _plaintext(sim, backup_id)
    for start in range(1024, len(written) - 64, 50_000):  # no 64-byte run of the plaintext
        assert written[start : start + 64] not in plaintext
    assert not _age_opens(age_key, written)


def _age_opens(identity: Path, data: bytes) -> bool:
    """Whether `age -d` accepts `data` as a whole, valid age file."""
    return subprocess.run(["age", "-d", "-i", str(identity)], input=data,
                          capture_output=True).returncode == 0


def _children(pid: int) -> list[int]:
    """Child processes of every thread of `pid` (the age encryptor among them)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
    return found


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def test_import_of_an_encrypted_s3_archive_hands_cloud66_the_plaintext(
    sim: Simulator,
    server: SimulatorServer,
    workspace: Workspace,
    s3_server: S3Server,
    s3_bucket: str,
) -> None:
    """import --backup decrypts a staging copy: Cloud 66 gets exactly the backup's bytes."""
    age_key, age_public, _, _ = _keys(workspace.root)
    secret = workspace.root / "s3-secret"
    secret.write_text(s3_server.secret_key + "\n")
    backend = s3_backend(s3_server, s3_bucket, secret)
    backup_id = sim.add_backup("stack-a", size=700_000)
    config = str(
        workspace.write_config(
            server.base_url,
            [{"uid": "stack-a"}],
            storage=backend.storage,
            encryption={"recipients": [age_public], "identity_file": str(age_key)},
        )
    )
    assert (await run_cli("--config", config, "sync")).code == 0
    result = await run_cli(
        "--config",
        config,
        "import",
        "--stack",
        "stack-a",
        "--db-type",
        "mysql",
        "--group",
        "1",
        "--backup",
        str(backup_id),
        "--expires",
        "1h",
    )
    assert result.code == 0, result.stderr
    await asyncio.wait_for(sim.imports[-1].done.wait(), 30)
    [record] = sim.imports
    assert (record.status, record.size) == (200, 700_000)
    assert record.sha256 == sim.expected_sha256(backup_id)
    staged = [k for k in await backend.keys() if k.startswith("c66-archiver-imports/")]
    assert len(staged) == 2  # the plaintext copy and its expires.json, until a pass after 1h

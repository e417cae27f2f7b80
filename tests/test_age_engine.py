"""The two encryptors (the `age` binary in a child process, pyrage in process): the same
age v1 file on every backend, a clear error when age fails, nothing left running."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from archiver.simulator import Simulator, SimulatorServer
from tests.archive_backends import ArchiveBackend
from tests.conftest import (
    PART_SIZE,
    REPO_ROOT,
    Workspace,
    cli_env,
    run_cli,
    run_pass,
    settings_for,
    start_cli,
    wait_until,
)

AGE = shutil.which("age")
pytestmark = pytest.mark.skipif(AGE is None, reason="the age CLI is missing")


def _age_key(folder: Path) -> tuple[Path, str]:
    key = folder / "age.key"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    public = subprocess.run(
        ["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True
    ).stdout.strip()
    return key, public


def _age_decrypt(key: Path, sealed: bytes) -> subprocess.CompletedProcess[bytes]:
    assert AGE is not None
    return subprocess.run([AGE, "-d", "-i", str(key)], input=sealed, capture_output=True)


def _plaintext(sim: Simulator, backup_id: int) -> bytes:
    return b"".join(path.read_bytes() for path in sim.backup_content_path(backup_id))


def _age_children(pid: int) -> list[int]:
    """The `age` processes among the children of every thread of process `pid`."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except FileNotFoundError:
            continue
        for child in children:
            try:
                if Path(f"/proc/{child}/comm").read_text().strip() == "age":
                    found.append(int(child))
            except FileNotFoundError:
                continue
    return found


def _running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (exited, not yet reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def _grown_past(archive: Path, size: int) -> bool:
    return any(part.stat().st_size > size for part in archive.rglob("*.part"))


@pytest.mark.parametrize("engine", ["age", "pyrage"])
async def test_both_engines_store_what_the_age_cli_decrypts_on_every_backend(
    sim: Simulator, server: SimulatorServer, workspace: Workspace,
    archive_backend: ArchiveBackend, engine: str,
) -> None:
    """A 4-part backup through each engine into each backend: `age -d` gives the backup
    back; stored_size and stored_sha256 are the stored file's; the log names the engine."""
    key, public = _age_key(workspace.root)
    backup_id = sim.add_backup("stack-a", database_name="shop", size=PART_SIZE * 3 + 999)
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}], storage=archive_backend.storage,
        encryption={"recipients": [public], "engine": engine},
    )
    result = await run_cli("--config", str(config), "sync")
    assert result.code == 0, result.stderr
    assert f'"engine": "{engine}' in result.stderr
    [stored_key] = [k for k in await archive_backend.keys() if k.endswith("/shop.tar.age")]
    stored = await archive_backend.read(stored_key)
    decrypted = _age_decrypt(key, stored)
    assert (decrypted.returncode, decrypted.stdout) == (0, _plaintext(sim, backup_id))
    manifest = json.loads(
        await archive_backend.read(stored_key.replace("shop.tar.age", "manifest.json"))
    )
    assert manifest["stored_size"] == len(stored)
    assert manifest["stored_sha256"] == hashlib.sha256(stored).hexdigest()
    assert manifest["sha256"] == sim.expected_sha256(backup_id)


async def test_an_empty_backup_is_a_valid_age_file_with_the_age_binary(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """Zero bytes upstream: the stored file is still an age v1 file of nothing."""
    key, public = _age_key(workspace.root)
    sim.add_backup("stack-a", database_name="empty", size=0)
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}],
        encryption={"recipients": [public], "engine": "age"},
    )
    result = await run_cli("--config", str(config), "sync")
    assert result.code == 0, result.stderr
    [stored] = workspace.archive.rglob("empty.tar.age")
    assert _age_decrypt(key, stored.read_bytes()).returncode == 0
    assert _age_decrypt(key, stored.read_bytes()).stdout == b""


async def test_without_an_age_binary_auto_falls_back_and_age_refuses_to_start(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """No `age` on PATH: engine = "auto" says so and encrypts with pyrage (what `age -d`
    opens); engine = "age" is a configuration error (exit 2) naming the key."""
    key, public = _age_key(workspace.root)
    backup_id = sim.add_backup("stack-a", database_name="shop", size=50_000)
    no_age = workspace.root / "empty-path"
    no_age.mkdir()
    env = cli_env(PATH=str(no_age))
    for engine, code in (("age", 2), ("auto", 0)):
        config = workspace.write_config(
            server.base_url, [{"uid": "stack-a"}],
            encryption={"recipients": [public], "engine": engine},
        )
        result = await run_cli("--config", str(config), "sync", env=env)
        assert result.code == code, result.stderr
    assert "no age binary on PATH" in result.stderr
    [said] = [line for line in result.stderr.splitlines() if "backups are encrypted" in line]
    assert '"level": "warning"' in said
    assert '"engine": "pyrage (no age binary on PATH' in said
    [stored] = workspace.archive.rglob("shop.tar.age")
    assert _age_decrypt(key, stored.read_bytes()).stdout == _plaintext(sim, backup_id)


async def test_an_age_process_killed_mid_stream_fails_the_backup_clearly(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """age dies under the pass: that backup fails naming age and the signal, without a
    hang; nothing is left (no file, no process); the next pass archives it."""
    key, public = _age_key(workspace.root)
    backup_id = sim.add_backup("stack-a", database_name="shop", size=3_000_000)
    # Every part slow: the parts of a backup come side by side (wide transfers).
    sim.faults.slow_downloads, sim.faults.slow_bytes_per_second = 100, 200_000
    settings = settings_for(
        workspace, server, "stack-a", encryption={"recipients": [public], "engine": "age"}
    )
    running = asyncio.create_task(run_pass(settings))
    await wait_until(lambda: _grown_past(workspace.archive, 100_000) and bool(
        _age_children(os.getpid())))
    [age] = _age_children(os.getpid())
    os.kill(age, signal.SIGKILL)
    summary = await asyncio.wait_for(running, 30)
    [failure] = summary.failed
    assert "age encryption failed" in failure.reason
    assert "signal 9" in failure.reason
    assert not _running(age)
    assert not Path(f"/proc/{age}").exists()  # reaped, not a zombie of ours
    assert not list(workspace.archive.rglob("*.part"))
    sim.faults.slow_downloads = 0
    again = await run_pass(settings)
    assert (again.exit_code, again.archived) == (0, 1)
    [stored] = workspace.archive.rglob("shop.tar.age")
    assert _age_decrypt(key, stored.read_bytes()).stdout == _plaintext(sim, backup_id)


async def test_sigterm_mid_encryption_stops_at_once_and_leaves_nothing(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """SIGTERM to the daemon while age encrypts a slow download: exit 0 once the grace
    period is over, the unfinished file removed (an encrypted upload cannot resume), age
    not left running."""
    _, public = _age_key(workspace.root)
    sim.add_backup("stack-a", database_name="shop", size=3_000_000)
    # Every part slow: the parts of a backup come side by side (wide transfers).
    sim.faults.slow_downloads, sim.faults.slow_bytes_per_second = 100, 100_000
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}], transfer={"grace_period": "1s"},
        encryption={"recipients": [public], "engine": "age"},
    )
    process = await start_cli("--config", str(config))  # the daemon: a pass at start
    await wait_until(
        lambda: _grown_past(workspace.archive, 100_000) and bool(_age_children(process.pid))
    )
    [age] = _age_children(process.pid)
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 0, stderr.decode(errors="replace")
    await wait_until(lambda: not _running(age), timeout=5)
    assert not list(workspace.archive.rglob("*.part"))
    assert not list(workspace.archive.rglob("manifest.json"))


async def test_check_config_names_the_engine_and_fails_a_missing_age(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """check-config says what will encrypt; engine = "age" without the binary is exit 2."""
    _, public = _age_key(workspace.root)
    sim.add_stack("stack-a")
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}],
        encryption={"recipients": [public], "engine": "age"},
    )
    good = await run_cli("--config", str(config), "check-config")
    assert good.code == 0, good.stderr
    assert f"ok      encryption: 1 recipient(s), by age ({AGE})" in good.stdout
    no_age = workspace.root / "empty-path"
    no_age.mkdir()
    bad = await run_cli("--config", str(config), "check-config", env=cli_env(PATH=str(no_age)))
    assert bad.code == 2
    assert 'FAILED  encryption: [encryption] engine = "age": no age binary on PATH' in bad.stderr


async def test_ctrl_c_to_the_terminal_lets_an_encrypted_transfer_finish(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """SIGINT to the whole process group (Ctrl-C): age, in a group of its own, is spared,
    so the daemon's transfer in flight ends within its grace period and decrypts."""
    key, public = _age_key(workspace.root)
    backup_id = sim.add_backup("stack-a", database_name="shop", size=250_000)  # one part
    sim.faults.slow_downloads, sim.faults.slow_bytes_per_second = 1, 100_000
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}], transfer={"grace_period": "30s"},
        encryption={"recipients": [public], "engine": "age"},
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "archiver", "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env=cli_env(), cwd=str(REPO_ROOT), start_new_session=True,  # a terminal's group
    )
    await wait_until(lambda: sim.stats.downloads_started == 1 and bool(
        _age_children(process.pid)))
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode(errors="replace")
    [stored] = workspace.archive.rglob("shop.tar.age")
    assert _age_decrypt(key, stored.read_bytes()).stdout == _plaintext(sim, backup_id)


async def test_a_full_disk_under_age_is_named_as_such_and_leaves_nothing(
    sim: Simulator, server: SimulatorServer, workspace: Workspace, tiny_disk: Path
) -> None:
    """Storage refuses the ciphertext (ENOSPC): the failure says "no space left", not a
    vague encryption error; no file and no age process are left behind."""
    _, public = _age_key(workspace.root)
    sim.add_backup("stack-a", database_name="big", size=3 * 1024 * 1024)
    workspace.archive = tiny_disk / "archive"
    settings = settings_for(
        workspace, server, "stack-a", encryption={"recipients": [public], "engine": "age"}
    )
    summary = await run_pass(settings)
    [failure] = summary.failed
    assert "no space left on" in failure.reason
    assert not list(workspace.archive.rglob("*.part"))
    assert _age_children(os.getpid()) == []

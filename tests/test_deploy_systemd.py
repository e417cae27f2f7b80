"""The systemd units in deploy/systemd: they verify, their exposure stays low, and the
program runs under the memory rule they impose (MemoryDenyWriteExecute=yes)."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, cli_env

UNIT_DIR = REPO_ROOT / "deploy" / "systemd"
UNITS = ["c66-archiver.service", "c66-archiver-sync.service", "c66-archiver-sync.timer"]
SERVICES = [unit for unit in UNITS if unit.endswith(".service")]
EXEC_START = "/opt/c66-archiver/bin/c66-archiver"
# docs/deployment.md reports the score; a change to the units that raises it must be deliberate.
MAX_EXPOSURE = 1.5

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze missing (scripts/bootstrap.sh installs the systemd package)",
)


@pytest.fixture(scope="module")
def unit_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root for `--root=`: the units installed, systemd's own units, and ExecStart's path.

    `verify` insists that ExecStart's program exists, and looks up the targets the
    units depend on, so the root gets a stand-in program and the host's system units.
    """
    root = tmp_path_factory.mktemp("root")
    program = root / EXEC_START.lstrip("/")
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    installed = root / "etc/systemd/system"
    installed.mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(UNIT_DIR / unit, installed / unit)
    return root


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=60, check=False
    )


@needs_systemd_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_unit_verifies_without_a_warning(unit_root: Path, unit: str) -> None:
    """`systemd-analyze verify` accepts the unit: exit 0 and nothing on stderr.

    Unknown keys and bad values only warn (exit 0), so the warnings count as failures.
    """
    result = _analyze("verify", f"--root={unit_root}", "--man=no", unit)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


@needs_systemd_analyze
@pytest.mark.parametrize("unit", SERVICES)
def test_service_exposure_stays_low(unit_root: Path, unit: str) -> None:
    """`systemd-analyze security --offline=true` rates the service at most MAX_EXPOSURE."""
    result = _analyze("security", "--offline=true", f"--root={unit_root}", "--no-pager", unit)
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert found, result.stdout + result.stderr
    exposure = float(found.group(1))
    print(f"{unit}: exposure {exposure}")
    assert exposure <= MAX_EXPOSURE


def test_daemon_unit_keeps_the_contract() -> None:
    """Type=notify with a watchdog, the token as a credential, a stop timeout above the grace."""
    text = (UNIT_DIR / "c66-archiver.service").read_text()
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "LoadCredential=api-token:/etc/c66-archiver/api-token",
        "StateDirectory=c66-archiver",
        "CapabilityBoundingSet=",
        "UMask=0077",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.MULTILINE), line
    assert re.search(r"^WatchdogSec=\S+$", text, re.MULTILINE)
    stop = re.search(r"^TimeoutStopSec=(\d+)s$", text, re.MULTILINE)
    assert stop
    assert int(stop.group(1)) > 30  # the default grace period is 30 s
    sync = (UNIT_DIR / "c66-archiver-sync.service").read_text()
    assert re.search(r"^ExecStart=.* --sync-now$", sync, re.MULTILINE)
    assert re.search(r"^SuccessExitStatus=143$", sync, re.MULTILINE)  # a stopped pass
    stop = re.search(r"^TimeoutStopSec=(\d+)s$", sync, re.MULTILINE)
    assert stop
    assert int(stop.group(1)) > 30
    timer = (UNIT_DIR / "c66-archiver-sync.timer").read_text()
    assert "Persistent=true" in timer
    assert re.search(r"^RandomizedDelaySec=\S+$", timer, re.MULTILINE)


def _mdwe_supported() -> bool:
    """Linux 6.3+ can refuse writable+executable memory per process (PR_SET_MDWE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_GET_MDWE, 0, 0, 0, 0) >= 0)


_PR_SET_MDWE, _PR_GET_MDWE, _PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1
# Turns on the kernel's W^X rule, then becomes the program: the rule survives execve.
_UNDER_MDWE = f"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl({_PR_SET_MDWE}, {_PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
    sys.exit("PR_SET_MDWE failed: errno %d" % ctypes.get_errno())
os.execv(sys.argv[1], sys.argv[1:])
"""


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_MDWE is Linux-only")
def test_program_runs_without_writable_executable_memory(tmp_path: Path) -> None:
    """The demo and every storage backend's libraries work under MemoryDenyWriteExecute=yes.

    systemd 252 enforces it with seccomp; the kernel's PR_SET_MDWE is the same rule.
    """
    if not _mdwe_supported():
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    imports = "import archiver.storage.s3, archiver.storage.sftp, asyncssh, aiobotocore.session"
    for argv in (
        [sys.executable, "-m", "archiver", "demo", "--dir", str(tmp_path / "demo")],
        [sys.executable, "-c", imports],
    ):
        result = subprocess.run(
            [sys.executable, "-c", _UNDER_MDWE, *argv],
            capture_output=True,
            text=True,
            timeout=120,
            env=cli_env(),
            check=False,
        )
        assert result.returncode == 0, result.stderr
    assert list((tmp_path / "demo" / "archive").rglob("manifest.json"))


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_MDWE is Linux-only")
def test_the_age_encryptor_runs_without_writable_executable_memory(tmp_path: Path) -> None:
    """The age binary (the encryptor, started by the archiver) works under the same rule."""
    age, keygen = shutil.which("age"), shutil.which("age-keygen")
    if not _mdwe_supported() or age is None or keygen is None:
        pytest.skip("needs PR_SET_MDWE (Linux 6.3+) and the age CLI")
    key = tmp_path / "key.txt"
    subprocess.run([keygen, "-o", str(key)], check=True, capture_output=True)
    public = subprocess.run([keygen, "-y", str(key)], check=True, capture_output=True,
                            text=True).stdout.strip()
    result = subprocess.run(
        [sys.executable, "-c", _UNDER_MDWE, age, "--encrypt", "--recipient", public],
        input=b"backup" * 100_000, capture_output=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"age-encryption.org/v1\n")

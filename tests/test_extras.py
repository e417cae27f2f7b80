"""Extras: the core install archives locally on its own; offsite backends need their extra.

Each run is a real `c66-archiver` process started through a small runner that can
hide modules from it (`sys.modules[name] = None`: `import name` fails and the import
system reports it missing, as when its extra was never installed) and that writes
the names of the modules the process had imported when it exited.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tomllib
from pathlib import Path

import pytest

from archiver.core.extras import STORAGE_EXTRAS
from archiver.simulator import Simulator, SimulatorServer
from tests.conftest import REPO_ROOT, Workspace, archived_sha256s, cli_env

RUNNER = """
import atexit, json, sys
hidden, report = json.loads(sys.argv[1]), sys.argv[2]
for name in hidden:
    sys.modules[name] = None  # as if the extra that brings it were not installed
def write_report():
    with open(report, "w") as out:
        json.dump(sorted(name for name, module in sys.modules.items() if module), out)
atexit.register(write_report)
sys.argv = ["c66-archiver", *sys.argv[3:]]
from archiver.__main__ import main
main()
"""

OFFSITE_MODULES = ["aiobotocore", "botocore", "asyncssh", "cryptography"]
# What a local one-shot pass must not load: the offsite backends, and what only other
# runs need (encryption, the Prometheus registry, rich's tracebacks and pygments,
# APScheduler for a config without a cron line).
NOT_FOR_A_LOCAL_PASS = [
    *OFFSITE_MODULES,
    "archiver.storage.s3",
    "archiver.storage.sftp",
    "pyrage",
    "prometheus_client",
    "pygments",
    "rich",
    "apscheduler",
]


async def _run_hidden(
    tmp_path: Path, hidden: list[str], *args: str
) -> tuple[int, str, set[str]]:
    """Run the CLI with `hidden` modules missing: exit code, stderr, modules imported."""
    report = tmp_path / "modules.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RUNNER, json.dumps(hidden), str(report), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=cli_env(), cwd=str(REPO_ROOT),
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    modules = set(json.loads(report.read_text())) if report.exists() else set()
    return process.returncode, stderr.decode(errors="replace"), modules


STORAGE_TABLES = {
    "s3": {"type": "s3", "bucket": "backups", "region": "us-east-1"},
    "sftp": {
        "type": "sftp", "host": "127.0.0.1", "username": "c66", "path": "/srv/backups",
        "private_key_file": "/nonexistent/id_ed25519", "known_hosts_file": "/nonexistent/known",
    },
}  # fmt: skip


@pytest.mark.parametrize("storage_type", ["s3", "sftp"])
async def test_a_backend_without_its_extra_exits_2_with_the_pip_line(
    storage_type: str, tmp_path: Path, workspace: Workspace
) -> None:
    """A config naming S3 or SFTP without its extra: exit 2, the install line, nothing made."""
    config = workspace.write_config(
        "http://127.0.0.1:9", [{"uid": "stack-a"}], storage=STORAGE_TABLES[storage_type]
    )
    code, stderr, _ = await _run_hidden(
        tmp_path, list(STORAGE_EXTRAS[storage_type].modules), "--config", str(config), "sync"
    )
    assert code == 2, stderr
    assert f"-m pip install 'c66-archiver[{storage_type}]'" in stderr
    assert str(config) in stderr  # names the file, like every config error
    assert sys.executable in stderr  # the pip of this very environment
    assert "Traceback" not in stderr
    assert not workspace.state.exists()  # nothing was attempted


async def test_a_local_pass_runs_on_the_core_install_and_imports_no_backend_it_does_not_use(
    sim: Simulator, server: SimulatorServer, tmp_path: Path, workspace: Workspace
) -> None:
    """Core only (offsite extras hidden): a local pass archives, and loads none of the rest."""
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", size=100_000)
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}])
    code, stderr, modules = await _run_hidden(
        tmp_path, OFFSITE_MODULES, "--config", str(config), "--log-format", "json", "sync"
    )
    assert code == 0, stderr
    assert archived_sha256s(workspace.archive) == {backup_id: sim.expected_sha256(backup_id)}
    assert "archiver.storage.local" in modules  # the report is real
    loaded = [name for name in NOT_FOR_A_LOCAL_PASS if name in modules]
    assert loaded == []


async def test_a_local_pass_with_every_extra_installed_still_imports_no_offsite_backend(
    sim: Simulator, server: SimulatorServer, tmp_path: Path, workspace: Workspace
) -> None:
    """Installed is not imported: with the extras present, a local pass leaves them alone."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=10_000)
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}])
    code, stderr, modules = await _run_hidden(
        tmp_path, [], "--config", str(config), "--log-format", "json", "sync"
    )
    assert code == 0, stderr
    assert sorted(set(NOT_FOR_A_LOCAL_PASS) & modules) == []


def test_every_storage_extra_is_declared_in_pyproject() -> None:
    """The extras the error message names exist, and the test extra installs them all."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for extra in STORAGE_EXTRAS.values():
        assert extra.name in extras
    assert "c66-archiver[s3,sftp]" in extras["test"]
    assert "c66-archiver[s3,sftp]" in extras["all"]
    core = " ".join(project["dependencies"])
    assert "aiobotocore" not in core
    assert "asyncssh" not in core

"""Extras: the core install archives locally on its own; offsite backends and Apprise
need their extra.

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

from archiver.core.extras import NOTIFY_EXTRA, STORAGE_EXTRAS
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
# Every extra's modules: what the core install lacks.
EXTRA_MODULES = [*OFFSITE_MODULES, "apprise"]
# What a local one-shot pass must not load: the offsite backends, Apprise and its
# requests without `apprise_urls`, and what only other runs need (encryption, the
# Prometheus registry, rich's tracebacks and pygments, APScheduler for a config
# without a cron line).
NOT_FOR_A_LOCAL_PASS = [
    *EXTRA_MODULES,
    "requests",
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


APPRISE_URLS = {"apprise_urls": ["json://127.0.0.1:9/hook", "slack://TokenA/TokenB/TokenC"]}


@pytest.mark.parametrize("command", ["sync", "check-config", "status"])
async def test_apprise_urls_without_the_notify_extra_exit_2_with_the_pip_line(
    command: str, tmp_path: Path, workspace: Workspace
) -> None:
    """`[notify] apprise_urls` without Apprise: exit 2 naming the [notify] line, nothing made."""
    config = workspace.write_config("http://127.0.0.1:9", [{"uid": "stack-a"}], notify=APPRISE_URLS)
    code, stderr, modules = await _run_hidden(
        tmp_path, list(NOTIFY_EXTRA.modules), "--config", str(config), command
    )
    assert code == 2, stderr
    assert f"{sys.executable} -m pip install 'c66-archiver[notify]'" in stderr
    assert "[notify] apprise_urls needs the optional [notify] part" in stderr
    assert str(config) in stderr
    assert "Traceback" not in stderr
    assert "TokenA" not in stderr  # the URLs stay secret in this error too
    assert "requests" not in modules  # found missing without importing anything of it
    assert not workspace.state.exists()


async def test_a_half_installed_apprise_is_a_config_error_not_a_traceback(
    tmp_path: Path, workspace: Workspace
) -> None:
    """Apprise there but one of its modules missing: exit 2 saying to reinstall [notify]."""
    config = workspace.write_config("http://127.0.0.1:9", [{"uid": "stack-a"}], notify=APPRISE_URLS)
    code, stderr, _ = await _run_hidden(
        tmp_path, ["apprise.url"], "--config", str(config), "status"
    )
    assert code == 2, stderr
    assert "Apprise cannot be loaded (apprise.url is missing)" in stderr
    assert "pip install 'c66-archiver[notify]'" in stderr
    assert "Traceback" not in stderr


async def test_a_local_pass_runs_on_the_core_install_and_imports_no_backend_it_does_not_use(
    sim: Simulator, server: SimulatorServer, tmp_path: Path, workspace: Workspace
) -> None:
    """Core only (every extra hidden): a local pass archives, and loads none of the rest."""
    sim.add_stack("stack-a")
    backup_id = sim.add_backup("stack-a", size=100_000)
    config = workspace.write_config(server.base_url, [{"uid": "stack-a"}])
    code, stderr, modules = await _run_hidden(
        tmp_path, EXTRA_MODULES, "--config", str(config), "--log-format", "json", "sync"
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


async def test_apprise_is_imported_once_apprise_urls_are_configured(
    sim: Simulator, server: SimulatorServer, tmp_path: Path, workspace: Workspace
) -> None:
    """The other side of the above: with `apprise_urls` set, the pass loads Apprise."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=10_000)
    config = workspace.write_config(
        server.base_url, [{"uid": "stack-a"}], notify={"apprise_urls": ["json://127.0.0.1:9/"]}
    )
    code, stderr, modules = await _run_hidden(
        tmp_path, [], "--config", str(config), "--log-format", "json", "sync"
    )
    assert code == 0, stderr
    assert {"apprise", "archiver.storage.local"} <= modules
    assert not {"archiver.storage.s3", "archiver.storage.sftp", "asyncssh"} & modules


def test_every_extra_is_declared_in_pyproject() -> None:
    """The extras the error messages name exist, and `all` (which tests install) has each."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for extra in [*STORAGE_EXTRAS.values(), NOTIFY_EXTRA]:
        assert extra.name in extras
    assert extras["all"] == ["c66-archiver[s3,sftp,notify]"]
    assert "c66-archiver[all]" in extras["test"]
    assert extras["notify"] == ["apprise>=1.9"]
    core = " ".join(project["dependencies"])
    for package in ("aiobotocore", "asyncssh", "apprise"):
        assert package not in core

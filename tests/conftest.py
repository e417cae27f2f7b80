"""Shared fixtures: the simulator on loopback, config files, and the real CLI as a process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from archiver.config.settings import Settings, load_settings
from archiver.model.summary import PassSummary
from archiver.simulator import Simulator, SimulatorServer
from archiver.sync.oneshot import archive_once
from tests.tmpfs import mount_tmpfs, unmount

# The real sshd for the SFTP tests (session-scoped fixtures `sftp_server`, `sftp_folder`).
# SeaweedFS for the S3 tests (session-scoped `s3_server`, per-test `s3_bucket`).
pytest_plugins = [
    "tests.sftp_server",
    "tests.s3_server",
    "tests.archive_backends",
    "tests.notify_receiver",  # `receiver`: a loopback HTTP server for pings, webhooks, Apprise
]

TOKEN = "test-token-7f3a9c1e5b"
PART_SIZE = 256 * 1024
REPO_ROOT = Path(__file__).resolve().parent.parent


# The tests of the transfer path (aiohttp, receive, chunks, join, resume), marked
# `transfer`: scripts/test-newest-aiohttp.sh runs them on the newest aiohttp allowed.
TRANSFER_TEST_FILES = frozenset({
    "test_receive.py", "test_chunks.py", "test_sync.py", "test_faults.py", "test_resume.py",
    "test_etags.py", "test_part_order.py", "test_progress_retries.py", "test_retry.py",
})  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the transfer tests (`-m transfer`)."""
    for item in items:
        if item.path.name in TRANSFER_TEST_FILES:
            item.add_marker(pytest.mark.transfer)


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff delays shrink to almost nothing in tests (stamina-style test mode)."""
    monkeypatch.setenv("C66_ARCHIVER_FAST_RETRY", "1")
    monkeypatch.delenv("C66_API_TOKEN", raising=False)
    monkeypatch.delenv("C66_ARCHIVER_CONFIG", raising=False)


@pytest.fixture
def sim(tmp_path: Path) -> Simulator:
    """A simulator with small parts, so multi-part backups stay small."""
    return Simulator(token=TOKEN, blob_dir=tmp_path / "blobs", part_size=PART_SIZE)


@pytest.fixture
async def server(sim: Simulator) -> AsyncIterator[SimulatorServer]:
    """The simulator serving on a loopback port."""
    async with SimulatorServer(sim) as running:
        yield running


def toml_value(value: Any) -> str:
    """Render a Python value as TOML (enough for our configs)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):  # an inline table: `watch = { max_backup_age = "8d" }`
        return "{ " + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + " }"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_toml(document: dict[str, Any]) -> str:
    """Tables and arrays of tables, one level deep: the shape of our config."""
    lines: list[str] = []
    for section, body in document.items():
        if isinstance(body, list):
            for item in body:
                lines.append(f"[[{section}]]")
                lines.extend(f"{key} = {toml_value(value)}" for key, value in item.items())
        else:
            lines.append(f"[{section}]")
            lines.extend(f"{key} = {toml_value(value)}" for key, value in body.items())
    return "\n".join(lines) + "\n"


@dataclass
class Workspace:
    """A user's set-up: a config file, an archive folder and a state folder."""

    root: Path
    config: Path
    archive: Path
    state: Path
    token_file: Path

    def write_config(self, base_url: str, stacks: list[dict[str, Any]], **sections: Any) -> Path:
        """Write the config; `sections` override or add tables (e.g. transfer={...}).

        `storage` replaces the local default whole (its keys differ per backend).
        """
        document: dict[str, Any] = {
            "api": {"base_url": base_url, "token_file": str(self.token_file)},
            "stacks": stacks,
            "storage": {"type": "local", "path": str(self.archive)},
            "state": {"path": str(self.state)},
            "transfer": {"max_concurrent_downloads": 4, "read_timeout": "5s"},
        }
        for name, table in sections.items():
            merged = name != "storage" and isinstance(table, dict)
            document[name] = {**document.get(name, {}), **table} if merged else table
        self.config.write_text(render_toml(document))
        return self.config


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs to fill up (we are root); skipped where mounting is not allowed."""
    mount_point = tmp_path / "tiny"
    mount_tmpfs(mount_point, "size=1m")
    yield mount_point
    unmount(mount_point)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A fresh config/archive/state layout with the token in a file."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    return Workspace(
        root=tmp_path,
        config=tmp_path / "config.toml",
        archive=tmp_path / "archive",
        state=tmp_path / "state",
        token_file=token_file,
    )


@dataclass
class CliResult:
    """What a `c66-archiver` process did."""

    code: int
    stdout: str
    stderr: str
    stdout_bytes: bytes = b""


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI process: ours, fast retries, no inherited token."""
    env = {k: v for k, v in os.environ.items() if k not in ("C66_API_TOKEN",)}
    env["C66_ARCHIVER_FAST_RETRY"] = "1"
    env.update(extra)
    return env


async def start_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO_ROOT
) -> asyncio.subprocess.Process:
    """Start `python -m archiver ARGS` as a real process."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "archiver",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or cli_env(),
        cwd=str(cwd),
    )


async def stop_cli(
    process: asyncio.subprocess.Process, signum: int = signal.SIGTERM, timeout: float = 30
) -> int:
    """Send `signum` to a CLI process (unless it ended) and return its exit code; the test
    fails when it takes longer than `timeout` to exit."""
    if process.returncode is None:
        process.send_signal(signum)
    return await asyncio.wait_for(process.wait(), timeout)


async def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, cwd: Path = REPO_ROOT
) -> CliResult:
    """Run the CLI to completion while the test's event loop keeps serving the simulator."""
    process = await start_cli(*args, env=env, cwd=cwd)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    text = stdout.decode(errors="replace")
    return CliResult(process.returncode, text, stderr.decode(errors="replace"), stdout)


def settings_for(
    workspace: Workspace, server: SimulatorServer, *uids: str, **sections: Any
) -> Settings:
    """Write a config for these stacks and load it as the program would."""
    stacks = [{"uid": uid} for uid in uids]
    return load_settings(workspace.write_config(server.base_url, stacks, **sections))


async def run_pass(settings: Settings) -> PassSummary:
    """One pass in process, without the progress display."""
    return await archive_once(settings, TOKEN, show_progress=False)


async def wait_until(check: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll `check` until it holds; fail the test after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def archived_sha256s(archive: Path) -> dict[int, str]:
    """backup id -> sha256 of the archived tar, for every manifest under `archive`."""
    import json

    result = {}
    for manifest_path in archive.rglob("manifest.json"):
        manifest = json.loads(manifest_path.read_text())
        result[int(manifest["backup_id"])] = file_sha256(manifest_path.parent / manifest["file"])
    return result

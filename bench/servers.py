"""Real offsite servers for the benchmark, started the way the test suite starts them.

The start-up pieces come from ``tests/s3_server.py`` (SeaweedFS ``weed mini`` on
loopback, SigV4 keys) and ``tests/sftp_server.py`` (Debian's sshd on a loopback port,
throwaway host and user keys, a known_hosts file, a throwaway system user); only the
pytest fixtures around them are replaced by context managers that keep every file
under a folder of ours and stop the server on the way out, errors included. Where the
test helpers would skip a test (no ``weed``, no sshd), a RuntimeError says why.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from common import REPO_ROOT

if str(REPO_ROOT) not in sys.path:  # `tests` is not installed: import it from the checkout
    sys.path.insert(0, str(REPO_ROOT))

from tests.s3_server import (  # after the sys.path line above
    ACCESS_KEY,
    SECRET_KEY,
    S3Server,
    free_ports,
    wait_until_answering,
    weed_binary,
    weed_command,
)
from tests.sftp_server import (  # after the sys.path line above
    SSHD,
    SftpServer,
    running_sshd,
)

__all__ = [
    "SSHD", "RunningS3", "S3Server", "SftpServer", "s3_server", "sftp_server", "tool_version",
    "weed_binary",
]


@dataclass(frozen=True)
class RunningS3:
    """A running ``weed mini`` and how to reach it."""

    server: S3Server
    pid: int
    log: Path


@contextmanager
def _no_skips(what: str) -> Iterator[None]:
    """Turn the test helpers' ``pytest.skip`` into an error naming what is missing."""
    try:
        yield
    except pytest.skip.Exception as skipped:
        raise RuntimeError(f"{what}: {skipped.msg}") from None


def _stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it lingers; always reaped."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def tool_version(argv: list[str]) -> str:
    """First line a tool prints about its version (stdout or stderr), or '?'."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "?"


@contextmanager
def s3_server(root: Path) -> Iterator[RunningS3]:
    """SeaweedFS ``weed mini`` on free loopback ports, data in ``root/data``; stopped at exit."""
    with _no_skips("SeaweedFS"):
        weed = weed_binary()
    root.mkdir(parents=True, exist_ok=True)
    ports = free_ports(5)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    log = root / "weed.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            weed_command(weed, root / "data", ports), env=env, cwd=root,
            stdout=output, stderr=subprocess.STDOUT,
        )
    try:
        endpoint_url = f"http://127.0.0.1:{ports[0]}"
        wait_until_answering(endpoint_url, process, log)
        yield RunningS3(S3Server(endpoint_url, ACCESS_KEY, SECRET_KEY), process.pid, log)
    finally:
        _stop(process, timeout=15)


@contextmanager
def sftp_server(folder: Path) -> Iterator[SftpServer]:
    """Debian's sshd on a free loopback port, everything in ``folder``; stopped at exit.

    The test suite's own start-up (``running_sshd``); a missing sshd is an error here,
    not a skip. Every folder above ``folder`` must be traversable by the SFTP user.
    """
    with _no_skips("sshd"), running_sshd(folder) as server:
        yield server

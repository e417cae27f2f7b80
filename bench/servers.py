"""Real offsite servers for the benchmark, started the way the test suite starts them.

Both come from ``loopback/`` at the repository root (shared with the tests): SeaweedFS
``weed mini`` and Debian's sshd on free loopback ports with throwaway keys, every file
under a folder of ours, stopped on the way out. A server that cannot run here raises
``loopback.ServerUnavailable`` naming what is missing.
"""

from __future__ import annotations

import subprocess

from common import REPO_ROOT  # noqa: F401 - puts the checkout (and `loopback`) on sys.path

from loopback.seaweedfs import RunningS3, S3Server, running_seaweedfs, weed_binary
from loopback.sshd import SSHD, SftpServer, running_sshd

__all__ = [
    "SSHD", "RunningS3", "S3Server", "SftpServer", "running_seaweedfs", "running_sshd",
    "tool_version", "weed_binary",
]


def tool_version(argv: list[str]) -> str:
    """First line a tool prints about its version (stdout or stderr), or '?'."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "?"

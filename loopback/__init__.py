"""Real servers on loopback (S3 via SeaweedFS, SFTP via OpenSSH) for the tests and the benchmark.

Not part of the installed program: the tests import it from the checkout, and so
does the benchmark (`bench/common.py` puts the checkout on `sys.path`).
"""

from __future__ import annotations

import subprocess


class ServerUnavailable(RuntimeError):
    """The server cannot run on this machine (a binary or a permission is missing)."""


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it lingers; always reaped."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

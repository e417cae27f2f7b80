"""A real tmpfs for the full-disk tests (we are root): mounted, or the test skipped."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


def mount_tmpfs(mount_point: Path, options: str) -> None:
    """Mount a tmpfs with `options` at `mount_point` (made if missing), or skip the test where
    mounting is not allowed."""
    mount_point.mkdir(exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")


def unmount(mount_point: Path) -> None:
    """Unmount lazily (a server process may still hold a file open); quiet if not mounted."""
    subprocess.run(["umount", "-l", str(mount_point)], check=False, capture_output=True)

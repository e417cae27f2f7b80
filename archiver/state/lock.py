"""The instance lock: one daemon or pass per state, a second exits 3 at once."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from archiver.core.errors import LockHeld
from archiver.core.private_files import FILE_MODE


class InstanceLock:
    """`<db>.lock`, flock'ed by the running instance and holding its pid.

    The kernel drops an flock when its holder dies, kill -9 included, so a
    crashed instance never leaves a stale lock behind.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._descriptor: int | None = None

    @property
    def held(self) -> bool:
        """True while this process holds the lock."""
        return self._descriptor is not None

    def acquire(self) -> None:
        """Take the lock or raise LockHeld naming the holder's pid."""
        if self._descriptor is not None:
            return
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        descriptor = os.open(self.path, flags, FILE_MODE)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(descriptor)
            raise LockHeld(
                f"another c66-archiver instance holds the state lock {self.path} (pid {holder})"
            ) from None
        os.fchmod(descriptor, FILE_MODE)
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode("ascii"), 0)
        self._descriptor = descriptor

    def release(self) -> None:
        """Drop the lock (the file stays: unlinking it would race a new holder)."""
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is None:
            return
        os.ftruncate(descriptor, 0)
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)

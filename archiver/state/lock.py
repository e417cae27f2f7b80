"""The state's two locks: one daemon or pass per state, and one writer of the archive at a time.

- The **instance lock** (`<db>.lock`) is held by a daemon or a one-shot pass for
  its whole life: a second one on the same state exits 3 at once.
- The **pass lock** (`<db>.pass.lock`) is held while a pass runs, and by `prune`
  while it removes backups. So `prune` runs beside a daemon that sleeps between
  passes (exit 3 at once while a pass runs, or it waits with `--wait`), and a pass
  that falls due while a prune runs waits for it to end.

Readers (`status`, `health`, `verify`, `restore`, `prune --dry-run`) take neither.
Both are `flock`s, which the kernel drops when their holder dies (kill -9
included), so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from archiver.core.errors import LockHeld
from archiver.core.private_files import FILE_MODE
from archiver.core.stopping import StopSignal

# How often a waiting pass or `prune --wait` tries the pass lock again.
POLL_SECONDS = 0.2


class StateLock:
    """An flock on one file, holding the holder's pid; `describe` says who holds it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._descriptor: int | None = None

    @property
    def held(self) -> bool:
        """True while this process holds the lock."""
        return self._descriptor is not None

    def describe_holder(self, pid: str) -> str:
        """The LockHeld message: what holds the lock (overridden per lock)."""
        return f"another process holds the lock {self.path} (pid {pid})"

    def acquire(self) -> None:
        """Take the lock or raise LockHeld naming the holder's pid."""
        if not self.try_acquire():
            raise LockHeld(self.describe_holder(self.holder_pid()))

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False (and nothing held) if another holds it."""
        if self._descriptor is not None:
            return True
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        descriptor = os.open(self.path, flags, FILE_MODE)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return False
        os.fchmod(descriptor, FILE_MODE)
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode("ascii"), 0)
        self._descriptor = descriptor
        return True

    async def acquire_waiting(
        self, stop: StopSignal | None = None, *, on_wait: Callable[[str], None] | None = None
    ) -> None:
        """Take the lock, waiting for its holder to let go; a stop ends the wait (Stopped).

        `on_wait` hears the holder's pid once, when the lock is found held.
        """
        stop = stop or StopSignal()
        if self.try_acquire():
            return
        if on_wait is not None:
            on_wait(self.holder_pid())
        while not self.try_acquire():
            await stop.sleep(POLL_SECONDS)

    def holder_pid(self) -> str:
        """The pid written by the holder ("unknown" if none can be read)."""
        try:
            with self.path.open("rb") as lock_file:
                text = lock_file.read(32).decode("ascii", "replace").strip()
        except OSError:
            text = ""
        return text or "unknown"

    def release(self) -> None:
        """Drop the lock (the file stays: unlinking it would race a new holder)."""
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is None:
            return
        os.ftruncate(descriptor, 0)
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)


class InstanceLock(StateLock):
    """`<db>.lock`: held by a daemon or a one-shot pass for its whole life."""

    def describe_holder(self, pid: str) -> str:
        """Who holds it, for the exit-3 line."""
        return f"another c66-archiver instance holds the state lock {self.path} (pid {pid})"


class PassLock(StateLock):
    """`<db>.pass.lock`: held while a pass runs, and by `prune` while it removes backups."""

    def describe_holder(self, pid: str) -> str:
        """Who holds it, for the exit-3 line."""
        return (
            f"a pass or a prune is running on this state (pid {pid}, lock {self.path}); "
            "try again when it ends, or wait for it with --wait"
        )

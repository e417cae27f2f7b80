"""The stop signal: on SIGTERM, whatever is merely waiting ends at once.

Only bytes in flight may use the grace period. A backoff sleep, a wait for the
request budget, a backup or a download queued behind a concurrency limit: each
waits through `StopSignal`, which raises `Stopped` as soon as a stop is asked
for (or at once, when it already was). `Stopped` is not a failure: the work is
abandoned cleanly and picked up by the next pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from archiver.core.errors import ArchiverError

_T = TypeVar("_T")


class Stopped(ArchiverError):
    """Not a failure: the process is stopping, and this work was left for the next pass."""


class StopSignal:
    """Set once, when the process should stop taking new work."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        """Ask everything that waits to stop waiting."""
        self._event.set()

    def is_set(self) -> bool:
        """True once a stop was asked for."""
        return self._event.is_set()

    async def wait(self) -> None:
        """Wait until a stop is asked for."""
        await self._event.wait()

    def raise_if_set(self) -> None:
        """Raise Stopped when a stop was asked for: call before starting new work."""
        if self._event.is_set():
            raise Stopped("stopping: left for the next pass")

    async def unless_stopped(self, awaitable: Awaitable[_T]) -> _T:
        """Await `awaitable`, or cancel it and raise Stopped as soon as a stop is asked for."""
        if self._event.is_set():
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # never started: close it, or Python warns it was not awaited
            self.raise_if_set()
        work = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self._event.wait())
        try:
            await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
        if work.cancelled():
            self.raise_if_set()
        return work.result()

    async def sleep(self, seconds: float) -> None:
        """Sleep, unless a stop is asked for first (then raise Stopped)."""
        if seconds <= 0:
            self.raise_if_set()
            return
        await self.unless_stopped(asyncio.sleep(seconds))

    @contextlib.asynccontextmanager
    async def holding(self, semaphore: asyncio.Semaphore) -> AsyncIterator[None]:
        """`async with semaphore`, but a stop ends the wait for it (raising Stopped)."""
        await self.unless_stopped(semaphore.acquire())
        try:
            yield
        finally:
            semaphore.release()

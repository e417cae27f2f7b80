"""SIGTERM or SIGINT during a pass: no new work, a grace period for bytes in flight, then out.

Shared by the daemon and the one-shot pass, so both stop alike: the stop signal
ends every wait at once (`archiver.core.stopping`), transfers in flight get
[transfer] grace_period to finish, and what is still running then is cancelled,
which leaves its upload unfinished (never under a final name) for the next pass
to resume or remove.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import TypeVar

import structlog

from archiver.core.stopping import StopSignal
from archiver.service import systemd

log = structlog.get_logger(__name__)

_T = TypeVar("_T")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulStop:
    """The stop of a process that runs passes: asked for once, by a signal or a caller."""

    def __init__(self, grace_period: timedelta) -> None:
        self.signal = StopSignal()
        self.signum: int | None = None
        """The signal that asked for the stop (None: not asked, or asked by a caller)."""
        self._grace = grace_period
        self._listeners: list[Callable[[], None]] = []

    def also(self, listener: Callable[[], None]) -> None:
        """Call `listener` too when a stop is asked for (e.g. to wake a loop that waits)."""
        self._listeners.append(listener)

    def request(self, signum: int | None = None) -> None:
        """Stop taking new work; the pass in flight gets the grace period. Idempotent."""
        if not self.signal.is_set():
            self.signum = signum
            systemd.notify_stopping()
            log.info(
                "stopping: no new work; transfers in flight may finish",
                grace_seconds=self._grace.total_seconds(),
            )
        self.signal.set()
        for listener in self._listeners:
            listener()

    @contextlib.contextmanager
    def on_signals(self) -> Iterator[None]:
        """While inside: SIGTERM and SIGINT ask for the stop instead of killing the process."""
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self.request, signum)
        try:
            yield
        finally:
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)

    async def run_pass(self, work: Awaitable[_T]) -> _T | None:
        """Await `work` (a pass); once a stop is asked for, give it the grace period, then
        cancel it. Its result, None when it was cancelled; raises what it raised."""
        task = asyncio.ensure_future(work)
        stop_waiter = asyncio.ensure_future(self.signal.wait())
        try:
            await asyncio.wait({task, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                await asyncio.wait({task}, timeout=self._grace.total_seconds())
            if not task.done():
                log.warning("grace period over; abandoning transfers in flight (resumed next pass)")
        finally:
            stop_waiter.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        return None if task.cancelled() else task.result()

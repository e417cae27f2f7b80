"""A client-side request budget: never more than N requests in any trailing hour.

Cloud 66 allows 3,000 requests per user per hour and answers `503 throttled`
past that until the next hourly window. Running into the limit wastes the rest
of the hour, so we keep a sliding-window log of our own request times and wait
before sending a request that would exceed the budget.

The log is seeded from the state store's persisted history (`history`) and each
new timestamp is handed to `on_acquire` to be persisted, so a restarted daemon
still knows what it spent. This module imports no state: the caller wires it.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable, Iterable

import structlog

WINDOW_SECONDS = 3600.0

log = structlog.get_logger(__name__)


class RequestBudget:
    """Sliding-window log of request times; `acquire()` waits for a free slot.

    Timestamps are wall-clock seconds (`time.time`) by default because they are
    persisted and must mean the same after a restart. Waits are slept in short
    slices and the clock re-read after each, so a clock that jumps (or a fake
    clock in tests) is followed rather than trusted once.
    """

    def __init__(
        self,
        requests_per_hour: int,
        *,
        clock: Callable[[], float] = time.time,
        history: Iterable[float] = (),
        on_acquire: Callable[[float], None] | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        if requests_per_hour < 1:
            raise ValueError("requests_per_hour must be at least 1")
        self.requests_per_hour = requests_per_hour
        self._clock = clock
        self._on_acquire = on_acquire
        self._poll_interval = poll_interval
        self._times: list[float] = sorted(history)  # kept sorted, oldest first
        # One acquirer at a time: FIFO, and no two callers can take the same slot.
        self._lock = asyncio.Lock()
        self._prune(self._clock())

    @property
    def remaining(self) -> int:
        """Requests that may still be sent now without exceeding the budget."""
        self._prune(self._clock())
        return max(0, self.requests_per_hour - len(self._times))

    def seconds_until_free(self) -> float:
        """Seconds until a request may be sent (0.0 when a slot is free now)."""
        now = self._clock()
        self._prune(now)
        excess = len(self._times) - self.requests_per_hour
        if excess < 0:
            return 0.0
        # The slot frees when the request that put us at the limit leaves the window;
        # with a seeded history above the limit that is not simply the oldest one.
        return max(0.0, self._times[excess] + WINDOW_SECONDS - now)

    async def acquire(self) -> None:
        """Wait until a slot is free, then record this request's time."""
        async with self._lock:
            logged = False
            while (wait := self.seconds_until_free()) > 0:
                if not logged:
                    log.info(
                        "request budget exhausted; waiting",
                        wait_seconds=round(wait, 1),
                        requests_per_hour=self.requests_per_hour,
                    )
                    logged = True
                await asyncio.sleep(min(wait, self._poll_interval))
            self._record(self._clock())

    def _record(self, at: float) -> None:
        bisect.insort(self._times, at)
        if self._on_acquire is not None:
            self._on_acquire(at)

    def _prune(self, now: float) -> None:
        """Forget requests that left the trailing window."""
        cut = bisect.bisect_right(self._times, now - WINDOW_SECONDS)
        if cut:
            del self._times[:cut]

"""`[transfer] bandwidth_limit`: a token bucket over every download at once (rclone's `--bwlimit`).

Tokens are bytes. They accrue at `rate` per second up to `capacity`, the most the
downloads may ever get ahead of the rate: one second of it, and no more than 1 MiB
(or an eighth of a second at rates above 8 MiB/s), so that a short transfer cannot
go through on the burst alone. The bucket starts empty.

A GET prepays what its first read may take (`prepay`, `refund`): aiohttp reads the
first bytes of a body with its headers, before the reader can pause. Later reads
are charged *after* they happen (`charge`): the bytes already crossed the link,
so they may take the bucket into debt, and the answer is how long to pause before
the next read. A reader that reads at most `quantum` bytes at a time overshoots the
rate by at most that much; a reader that asks `delay` again before reading, after
its pause, reads only once the bucket is out of debt, so the bytes read by all of
them over any stretch of time are at most `capacity + rate * elapsed + quantum`
(times the readers that read at the same instant).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

# The most a throttled reader takes from the socket in one read.
QUANTUM = 64 * 1024
_MIB = 1024 * 1024


def burst_for(rate: float) -> float:
    """The bucket's capacity at `rate` bytes/s (see the module's docstring)."""
    return min(rate, max(_MIB, rate / 8))


class TokenBucket:
    """Bytes per second shared by every reader that draws on it."""

    def __init__(
        self,
        rate: float,
        *,
        capacity: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("a token bucket needs a positive rate")
        self.rate = float(rate)
        self.capacity = burst_for(rate) if capacity is None else float(capacity)
        self.quantum = int(min(QUANTUM, max(1.0, self.capacity)))
        self._clock = clock
        self._tokens = 0.0  # starts empty: no burst at start-up
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        if self._tokens < self.capacity:  # (a refund may have taken it above: it stays)
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def charge(self, count: int) -> float:
        """Take `count` bytes (into debt if need be); the seconds until the debt is paid."""
        self._refill()
        self._tokens -= count
        return self.wait_time()

    def delay(self) -> float:
        """Seconds until the bucket is out of debt, now (0 when it is not in debt)."""
        self._refill()
        return self.wait_time()

    def wait_time(self) -> float:
        """Seconds until the bucket is out of debt, as of the last charge or `delay`."""
        return max(0.0, -self._tokens / self.rate)

    async def take(self, count: int) -> None:
        """Charge `count` bytes, then sleep off any debt (for readers that can await)."""
        delay = self.charge(count)
        if delay > 0:
            await asyncio.sleep(delay)

    async def prepay(self, count: int) -> int:
        """Pay for `count` bytes before they are asked for (what a GET's first read takes
        before anyone can pause it); `refund` what did not come. Returns `count`."""
        await self.take(count)
        return count

    def refund(self, count: int) -> None:
        """Give back tokens paid for bytes that never came (they may exceed `capacity`:
        they were paid for by waiting, not saved up while idle)."""
        if count > 0:
            self._refill()
            self._tokens += count

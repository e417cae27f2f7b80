"""The retry layer: API calls, downloads, alerts, S3 aborts and SFTP reconnects retry here.

Single S3 calls are the exception: botocore retries them itself (standard mode).

A `Retrier` follows one operation: it counts failures *in a row* (an attempt
that made progress resets the count, so a download that keeps advancing is not
given up on), bounds the whole operation's retrying by a time limit, sleeps a
capped, fully jittered exponential backoff ("Exponential Backoff And Jitter",
AWS architecture blog) or the delay a server asked for (`Retry-After`), and
ends any wait at once when the process is stopping (`archiver.core.stopping`).

Hand-written rather than stamina or tenacity: those count attempts, not
attempts without progress, and cannot end a backoff on our stop signal; the
policy itself is a few lines. `retrying` wraps the common case (retry these
exceptions, maybe recover in between); the API client and the downloader drive
a `Retrier` themselves because they decide per failure what it costs.

Tests set `C66_ARCHIVER_FAST_RETRY=1` (like stamina's test mode): our own
backoff delays shrink a thousandfold. A wait the server asked for is not ours
to shrink and is slept as asked.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from archiver.core.errors import ArchiverError
from archiver.core.stopping import StopSignal

FAST_RETRY_ENV = "C66_ARCHIVER_FAST_RETRY"
_FAST_FACTOR = 0.001

_T = TypeVar("_T")


def fast_retry_enabled() -> bool:
    """True when the process-wide test switch is on (read on every call: tests toggle it)."""
    return os.environ.get(FAST_RETRY_ENV, "") not in ("", "0", "false", "no")


def scaled(seconds: float) -> float:
    """A wait of ours as it should really be slept: shrunk in fast-retry test mode."""
    return seconds * _FAST_FACTOR if fast_retry_enabled() else seconds


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with full jitter; `attempt` counts from 0."""

    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to sleep after failure number `attempt + 1` in a row."""
        # Clamp the exponent so a large attempt number cannot overflow the float.
        ceiling = min(self.cap, self.base * 2 ** min(attempt, 62))
        return scaled(random.uniform(0, ceiling))


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one operation tries.

    `retries`: failures in a row (without progress in between) that are retried;
    one more ends the operation. `time_limit`: seconds from the first failure
    after which the next failure ends the operation, progress or not (None: no
    limit). `backoff`: the wait between attempts.
    """

    retries: int
    backoff: Backoff = Backoff()
    time_limit: float | None = None


class RetriesExhausted(ArchiverError):
    """Permanent for this operation: it failed too often, or for too long."""


class Retrier:
    """The retry state of one operation (see the module's docstring)."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        stop: StopSignal | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self._stop = stop or StopSignal()
        self._clock = clock
        self.failures_in_a_row = 0
        self.failures = 0
        self._first_failure_at: float | None = None

    @property
    def retries_left(self) -> int:
        """Failures in a row that will still be retried."""
        return max(0, self.policy.retries - self.failures_in_a_row)

    def failed(
        self, reason: str, *, progressed: bool = False, retries: int | None = None
    ) -> None:
        """Count a failed attempt; raise RetriesExhausted when it is one too many (or too late).

        An attempt that `progressed` (moved the operation forward before it broke)
        does not count toward the failures in a row: it starts them again at 0.
        `retries` overrides the policy's count for this kind of failure.
        """
        now = self._clock()
        self.failures += 1
        self.failures_in_a_row = 0 if progressed else self.failures_in_a_row + 1
        if self._first_failure_at is None:
            self._first_failure_at = now
        allowed = self.policy.retries if retries is None else retries
        if self.failures_in_a_row > allowed:
            raise RetriesExhausted(f"{reason} ({self._counts()})")
        limit = self.policy.time_limit
        if limit is not None and now - self._first_failure_at > limit:
            raise RetriesExhausted(
                f"{reason} (still failing {limit:g}s after the first failure; {self._counts()})"
            )

    def _counts(self) -> str:
        in_a_row = self.failures_in_a_row
        if in_a_row == self.failures:
            return f"gave up after {self.failures} failed attempts"
        return (
            f"gave up after {self.failures} failed attempts, the last {in_a_row} without progress"
        )

    def backoff_delay(self) -> float:
        """Our own wait before the next attempt (after `failed`)."""
        return self.policy.backoff.delay(max(0, self.failures_in_a_row - 1))

    async def sleep(self, seconds: float) -> None:
        """Wait before the next attempt; ends at once (raising Stopped) when stopping."""
        await self._stop.sleep(seconds)


async def retrying(
    operation: Callable[[], Awaitable[_T]],
    *,
    policy: RetryPolicy,
    retry_on: tuple[type[BaseException], ...],
    describe: Callable[[BaseException], str] = repr,
    recover: Callable[[], Awaitable[None]] | None = None,
    stop: StopSignal | None = None,
) -> _T:
    """Run `operation`, retrying the exceptions in `retry_on` as `policy` allows.

    `recover` runs before each retry (e.g. reconnect). When retries run out the
    last error is raised again, so callers see what went wrong, not a wrapper.
    """
    retrier = Retrier(policy, stop=stop)
    while True:
        try:
            return await operation()
        except retry_on as error:
            try:
                retrier.failed(describe(error))
            except RetriesExhausted:
                raise error from None
        await retrier.sleep(retrier.backoff_delay())
        if recover is not None:
            await recover()

"""A small backoff policy shared by everything that retries.

Capped exponential backoff with full jitter (AWS architecture blog, "Exponential
Backoff And Jitter"). Hand-written rather than stamina/tenacity because callers
also have to honour a server's `Retry-After`, which those libraries do not model
cleanly; the policy itself is four lines.

Tests set `C66_ARCHIVER_FAST_RETRY=1` (like stamina's test mode) so our own
backoff delays shrink a thousandfold and integration tests stay fast. A wait the
server asked for (`Retry-After`) is not ours to shrink and is slept as asked.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

FAST_RETRY_ENV = "C66_ARCHIVER_FAST_RETRY"
_FAST_FACTOR = 0.001


def fast_retry_enabled() -> bool:
    """True when the process-wide test switch is on (read on every call: tests toggle it)."""
    return os.environ.get(FAST_RETRY_ENV, "") not in ("", "0", "false", "no")


def scaled(seconds: float) -> float:
    """A wait as it should really be slept: shrunk in fast-retry test mode."""
    return seconds * _FAST_FACTOR if fast_retry_enabled() else seconds


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with full jitter.

    `attempt` counts from 0 (the wait after the first failure). `max_attempts`
    is the default number of tries for callers that have no setting of their own.
    """

    base: float = 0.5
    cap: float = 30.0
    max_attempts: int = 6

    def delay(self, attempt: int) -> float:
        """Seconds to sleep before retry number `attempt + 1`."""
        # Clamp the exponent so a large attempt number cannot overflow the float.
        ceiling = min(self.cap, self.base * 2 ** min(attempt, 62))
        return scaled(random.uniform(0, ceiling))

"""The bandwidth limit's token bucket, on a clock the test moves: rate, burst, debt, refunds."""

from __future__ import annotations

import heapq

import pytest

from archiver.core.token_bucket import QUANTUM, TokenBucket, burst_for

MiB = 1024 * 1024


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_starts_empty_and_charges_into_debt() -> None:
    """No burst at start: the first MiB at 1 MiB/s means a one-second pause."""
    clock = Clock()
    bucket = TokenBucket(MiB, clock=clock)
    assert bucket.charge(MiB) == pytest.approx(1.0)
    clock.now = 0.5
    assert bucket.delay() == pytest.approx(0.5)
    clock.now = 1.0
    assert bucket.delay() == 0


@pytest.mark.parametrize(
    ("rate", "burst"),
    [(100 * 1024, 100 * 1024), (4 * MiB, MiB), (64 * MiB, 8 * MiB)],
)
def test_idle_time_saves_at_most_the_burst(rate: int, burst: int) -> None:
    """After a long idle spell the bucket holds one second of rate at most, never over 1 MiB
    (an eighth of a second above 8 MiB/s)."""
    clock = Clock()
    bucket = TokenBucket(rate, clock=clock)
    clock.now = 3600.0
    assert burst_for(rate) == burst
    assert bucket.charge(burst) == 0
    assert bucket.charge(1) > 0


def test_a_refund_is_kept_even_above_the_burst() -> None:
    """Prepaid tokens a GET did not use come back whole: they were paid by waiting."""
    clock = Clock()
    bucket = TokenBucket(MiB, clock=clock)
    clock.now = 10.0
    bucket.charge(MiB)  # the saved burst, spent
    bucket.refund(3 * MiB)
    assert bucket.charge(3 * MiB) == 0
    assert bucket.charge(1) > 0


def test_readers_that_wait_out_the_debt_keep_to_the_rate() -> None:
    """Four readers reading a quantum whenever the bucket lets them: over ten seconds the
    bytes read stay under rate x time + one quantum per reader, and reach the rate."""
    clock = Clock()
    rate = 2 * MiB
    bucket = TokenBucket(rate, clock=clock)
    ready = [(0.0, reader) for reader in range(4)]
    read = 0
    while ready:
        clock.now, reader = heapq.heappop(ready)
        delay = bucket.delay()
        if delay == 0:
            read += QUANTUM
            assert read <= rate * clock.now + 4 * QUANTUM
            delay = bucket.charge(QUANTUM)
        if clock.now + delay < 10.0:
            heapq.heappush(ready, (clock.now + delay, reader))
    assert read >= rate * 9.9

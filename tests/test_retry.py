"""The one retry layer: failures in a row, progress, time limits, backoff, and the stop signal."""

from __future__ import annotations

import asyncio
import time

import pytest

from archiver.core.retry import Backoff, Retrier, RetriesExhausted, RetryPolicy, retrying
from archiver.core.stopping import Stopped, StopSignal


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_in_a_row_past_retries_give_up_with_both_counts() -> None:
    """retries=2: the third failure in a row ends it; progress in between starts the count again."""
    retrier = Retrier(RetryPolicy(retries=2))
    retrier.failed("cut")
    retrier.failed("cut", progressed=True)  # brought bytes: does not count in a row
    retrier.failed("cut")
    retrier.failed("cut")
    assert retrier.retries_left == 0
    with pytest.raises(RetriesExhausted) as raised:
        retrier.failed("refused")
    assert str(raised.value) == (
        "refused (gave up after 5 failed attempts, the last 3 without progress)"
    )


def test_a_per_failure_override_of_retries() -> None:
    """A kind of failure may allow fewer retries than the policy (malformed API answers)."""
    retrier = Retrier(RetryPolicy(retries=5))
    retrier.failed("malformed", retries=1)
    with pytest.raises(RetriesExhausted, match="gave up after 2 failed attempts"):
        retrier.failed("malformed", retries=1)


def test_the_time_limit_ends_even_progressing_attempts() -> None:
    """Past time_limit since the first failure, the next failure ends it, progress or not."""
    clock = FakeClock()
    retrier = Retrier(RetryPolicy(retries=1, time_limit=60), clock=clock)
    retrier.failed("cut", progressed=True)
    clock.now += 59
    retrier.failed("cut", progressed=True)
    clock.now += 2
    with pytest.raises(RetriesExhausted, match="still failing 60s after the first failure"):
        retrier.failed("cut", progressed=True)


def test_backoff_grows_is_capped_and_restarts_small_after_progress(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Full jitter under min(cap, base * 2^n); after progress the ceiling is the base again."""
    monkeypatch.delenv("C66_ARCHIVER_FAST_RETRY")
    ceilings: list[float] = []
    monkeypatch.setattr("archiver.core.retry.random.uniform", lambda low, high: high)
    retrier = Retrier(RetryPolicy(retries=10, backoff=Backoff(base=1.0, cap=5.0)))
    for _ in range(4):
        retrier.failed("x")
        ceilings.append(retrier.backoff_delay())
    retrier.failed("x", progressed=True)
    ceilings.append(retrier.backoff_delay())
    assert ceilings == [1.0, 2.0, 4.0, 5.0, 1.0]


def test_fast_retry_mode_shrinks_our_own_waits() -> None:
    """With C66_ARCHIVER_FAST_RETRY set (the tests' conftest sets it), backoff is a thousandth."""
    assert Backoff(base=10.0, cap=10.0).delay(5) <= 0.01


async def test_retrying_retries_then_raises_the_last_error_itself() -> None:
    """`retrying` calls recover between tries and re-raises the original error when done."""
    calls: list[str] = []

    async def flaky() -> str:
        calls.append("try")
        raise ConnectionResetError(f"reset {calls.count('try')}")

    async def recover() -> None:
        calls.append("recover")

    with pytest.raises(ConnectionResetError, match="reset 3"):
        await retrying(
            flaky, policy=RetryPolicy(retries=2), retry_on=(ConnectionResetError,),
            recover=recover,
        )
    assert calls == ["try", "recover", "try", "recover", "try"]


async def test_retrying_does_not_retry_other_errors() -> None:
    """An error outside `retry_on` goes straight through."""
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        await retrying(broken, policy=RetryPolicy(retries=5), retry_on=(ConnectionResetError,))
    assert calls == 1


async def test_a_stop_ends_a_backoff_sleep_at_once() -> None:
    """A long backoff sleep raises Stopped as soon as the stop is set."""
    stop = StopSignal()
    retrier = Retrier(RetryPolicy(retries=1), stop=stop)
    asyncio.get_running_loop().call_later(0.05, stop.set)
    started = time.monotonic()
    with pytest.raises(Stopped):
        await retrier.sleep(3600)
    assert time.monotonic() - started < 1.0


async def test_a_stop_ends_the_wait_for_a_semaphore_and_leaks_no_permit() -> None:
    """Queued behind a busy limit, a stop raises Stopped; the permit count is intact after."""
    stop = StopSignal()
    limit = asyncio.Semaphore(1)
    async with stop.holding(limit):
        waiter = asyncio.ensure_future(stop.unless_stopped(limit.acquire()))
        await asyncio.sleep(0.01)
        stop.set()
        with pytest.raises(Stopped):
            await waiter
    assert not limit.locked()
    with pytest.raises(Stopped):  # once set, nothing new starts
        async with stop.holding(limit):
            pass
    assert not limit.locked()


async def test_work_that_finishes_first_is_returned() -> None:
    """`unless_stopped` returns the awaited result when no stop comes."""
    stop = StopSignal()

    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert await stop.unless_stopped(answer()) == 42

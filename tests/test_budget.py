"""The client-side request budget: a sliding-window log over the trailing hour."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from archiver.cloud66.budget import WINDOW_SECONDS, RequestBudget


class FakeClock:
    """A clock that only moves when the test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def test_fresh_budget_has_every_slot() -> None:
    """A budget with no history offers all its slots and needs no wait."""
    budget = RequestBudget(5, clock=FakeClock())
    assert budget.remaining == 5
    assert budget.seconds_until_free() == 0.0


async def test_acquire_records_and_reports_each_timestamp() -> None:
    """Each acquire uses one slot and hands its timestamp to on_acquire for persistence."""
    clock = FakeClock()
    persisted: list[float] = []
    budget = RequestBudget(5, clock=clock, on_acquire=persisted.append)
    for _ in range(3):
        await budget.acquire()
        clock.advance(10)
    assert budget.remaining == 2
    assert persisted == [clock.now - 30, clock.now - 20, clock.now - 10]


async def test_full_budget_frees_when_the_oldest_request_leaves_the_window() -> None:
    """With every slot used, the wait is until the oldest request is an hour old."""
    clock = FakeClock()
    start = clock.now
    budget = RequestBudget(3, clock=clock, history=[start - 100, start - 50, start - 10])
    assert budget.remaining == 0
    assert budget.seconds_until_free() == pytest.approx(WINDOW_SECONDS - 100)
    clock.advance(WINDOW_SECONDS - 100)
    assert budget.remaining == 1
    assert budget.seconds_until_free() == 0.0


async def test_history_older_than_an_hour_is_ignored() -> None:
    """Seeded timestamps outside the trailing hour do not count against the budget."""
    clock = FakeClock()
    old = [clock.now - WINDOW_SECONDS - 1, clock.now - WINDOW_SECONDS]
    budget = RequestBudget(2, clock=clock, history=[*old, clock.now - 5])
    assert budget.remaining == 1


async def test_history_above_the_limit_waits_for_enough_requests_to_expire() -> None:
    """A history seeded past the limit (the limit was lowered) waits until usage drops below it."""
    clock = FakeClock()
    history = [clock.now - 400, clock.now - 300, clock.now - 200, clock.now - 100]
    budget = RequestBudget(2, clock=clock, history=history)
    # Four in the window, two allowed: the third-newest (t-200) must leave first.
    assert budget.seconds_until_free() == pytest.approx(WINDOW_SECONDS - 200)


async def test_unsorted_history_is_handled() -> None:
    """History from the state store may come in any order."""
    clock = FakeClock()
    budget = RequestBudget(2, clock=clock, history=[clock.now - 10, clock.now - 3000])
    assert budget.seconds_until_free() == pytest.approx(WINDOW_SECONDS - 3000)


async def test_sixth_acquire_of_five_per_hour_waits_until_the_clock_frees_a_slot() -> None:
    """Under a 5/hour budget the 6th acquire blocks, logs once, and proceeds when time passes."""
    clock = FakeClock()
    persisted: list[float] = []
    budget = RequestBudget(5, clock=clock, on_acquire=persisted.append, poll_interval=0.01)
    for _ in range(5):
        await budget.acquire()
    with capture_logs() as logs:
        sixth = asyncio.create_task(budget.acquire())
        await asyncio.sleep(0.1)
        assert not sixth.done(), "the 6th request went out inside the hour"
        clock.advance(WINDOW_SECONDS)
        await asyncio.wait_for(sixth, timeout=5)
    waits = [entry for entry in logs if entry["event"] == "request budget exhausted; waiting"]
    assert len(waits) == 1
    assert waits[0]["log_level"] == "info"
    assert waits[0]["wait_seconds"] == pytest.approx(WINDOW_SECONDS)
    assert len(persisted) == 6
    assert persisted[-1] == clock.now


async def test_concurrent_acquirers_never_exceed_the_budget() -> None:
    """Many tasks acquiring at once get exactly the free slots; the rest wait."""
    clock = FakeClock()
    budget = RequestBudget(4, clock=clock, poll_interval=0.01)
    tasks = [asyncio.create_task(budget.acquire()) for _ in range(10)]
    await asyncio.sleep(0.1)
    assert sum(task.done() for task in tasks) == 4
    assert budget.remaining == 0
    clock.advance(WINDOW_SECONDS)
    await asyncio.sleep(0.1)
    assert sum(task.done() for task in tasks) == 8
    clock.advance(WINDOW_SECONDS)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)


def test_a_budget_of_zero_is_refused() -> None:
    """requests_per_hour must be positive: a zero budget would wait forever."""
    with pytest.raises(ValueError, match="at least 1"):
        RequestBudget(0)

"""What sets a writer's pace, on a clock the test moves: the network, or storage."""

from __future__ import annotations

from archiver.transfer.writer_pace import STORING, WAITING, WORKING, WriterPace


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _cycle(pace: WriterPace, clock: Clock, waiting: float, storing: float, times: int) -> None:
    """`times` rounds of waiting for bytes, then handing them to storage, for so long."""
    for _ in range(times):
        pace.enter(WAITING)
        clock.now += waiting
        pace.enter(STORING)
        clock.now += storing
        pace.enter(WORKING)


async def test_a_writer_that_mostly_waits_for_bytes_is_network_bound() -> None:
    """40 ms waiting for each 1 ms chunk (a capped link): reading ahead pays."""
    clock = Clock()
    called: list[bool] = []
    pace = WriterPace(on_network_bound=lambda: called.append(True), clock=clock)
    _cycle(pace, clock, waiting=0.040, storing=0.001, times=50)
    assert pace.network_bound()
    assert called  # each wait while network-bound lets the budget grant again


async def test_a_writer_held_up_by_storage_is_not() -> None:
    """Short waits between long uploads (S3 behind a fast download): no reading ahead."""
    clock = Clock()
    pace = WriterPace(clock=clock)
    _cycle(pace, clock, waiting=0.010, storing=0.120, times=50)
    assert not pace.network_bound()


async def test_the_first_wait_of_a_transfer_proves_nothing() -> None:
    """The wait for the very first bytes alone does not open the gate."""
    clock = Clock()
    pace = WriterPace(clock=clock)
    pace.enter(WAITING)
    clock.now += 0.05
    pace.enter(WORKING)
    assert not pace.network_bound()

"""The in-flight budget: readers ahead of the writer, the heads being written, and waiting."""

from __future__ import annotations

from archiver.transfer.in_flight import InFlight

KiB = 1024


def test_readers_ahead_leave_room_for_the_heads() -> None:
    """Ahead shares stop at the limit less the heads' room; a head takes what is left."""
    budget = InFlight(1000, head_room=200)
    ahead, head = budget.share(), budget.share()
    head.make_head()
    assert ahead.request(800, lambda: None)
    assert not ahead.request(1, lambda: None)  # the last 200 are the head's
    ahead.withdraw()
    assert head.request(200, lambda: None)
    assert budget.used == budget.peak == 1000


def test_a_head_holding_nothing_always_gets_one_chunk() -> None:
    """Over a full budget, a head with nothing in flight still gets room: the writing never
    waits on bytes that wait on it."""
    budget = InFlight(1000, head_room=100)
    ahead, head = budget.share(), budget.share()
    ahead.force(1000)
    head.make_head()
    assert head.request(300, lambda: None)
    assert not head.request(300, lambda: None)  # once it holds some, it waits its turn


def test_released_room_goes_to_the_heads_first_then_in_order() -> None:
    """Waiting requests are granted as room comes back: heads before the others."""
    budget = InFlight(1000, head_room=0)
    holder, first, second, head = (budget.share() for _ in range(4))
    granted: list[str] = []
    holder.force(1000)
    assert not first.request(400, lambda: granted.append("first"))
    assert not second.request(400, lambda: granted.append("second"))
    head.force(1)
    head.make_head()
    assert not head.request(400, lambda: granted.append("head"))
    holder.release(900)  # 101 in use: room for two of the three
    assert granted == ["head", "first"]
    first.close()
    assert granted == ["head", "first", "second"]


def test_a_share_done_with_closes_once_its_bytes_are_written() -> None:
    """`done` keeps the room of bytes still being written; the last release frees it all."""
    budget = InFlight(10 * KiB, head_room=KiB)
    share = budget.share()
    share.make_head()
    share.force(3 * KiB)
    share.done()
    assert not share.closed
    share.release(2 * KiB)
    share.release(KiB)
    assert share.closed
    assert budget.used == 0
    share.release(KiB)  # a late release after closing is nothing
    assert budget.used == 0


def test_closing_gives_everything_back_and_forgets_the_request() -> None:
    """A share dropped mid-way (a restart, a failure) leaves no room taken and no waiter."""
    budget = InFlight(1000, head_room=0)
    share, other = budget.share(), budget.share()
    granted: list[str] = []
    share.force(900)
    assert not share.request(200, lambda: granted.append("share"))
    share.close()
    assert budget.used == 0
    assert other.request(1000, lambda: None)
    assert granted == []


def test_while_the_writer_has_bytes_to_spare_nobody_reads_far_ahead() -> None:
    """Gate shut (storage is the slow side): an ahead share gets its cushion, a head its
    room; once the writer waits for bytes (`regrant`), both may read on."""
    writer_waits = False
    budget = InFlight(100 * KiB, head_room=8 * KiB, cushion=2 * KiB)
    ahead = budget.share(gate=lambda: writer_waits)
    head = budget.share(gate=lambda: writer_waits)
    head.make_head()
    granted: list[str] = []
    assert ahead.request(2 * KiB, lambda: None)
    assert not ahead.request(KiB, lambda: granted.append("ahead"))
    assert head.request(8 * KiB, lambda: None)
    assert not head.request(KiB, lambda: granted.append("head"))
    writer_waits = True
    budget.regrant()
    assert granted == ["head", "ahead"]

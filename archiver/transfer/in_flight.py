"""`[transfer] in_flight`: bytes received but not yet written, over every download at once.

A receiver asks its `Share` for room before it reads a chunk into memory, and the
chunk's room is given back once storage has it. Without room the receiver stops
reading from its socket (`archiver.transfer.receive`), so the sender is held back by TCP,
and memory stays bounded by the budget, never by a file's size or its streams.

Two kinds of share draw on one budget. A file's *head* (the segment being written
now) has its bytes written as they come; shares *ahead* of it hold segments that
wait their turn. Ahead shares may fill the budget only up to `limit` less some
room kept for the heads (`kept_for_heads` each, half the budget at most), so a
head always finds room to keep its writer busy; and a head holding nothing is granted
one chunk even over the limit, so the bytes being written never wait on bytes
that wait on them (the overshoot is one chunk per head).

Reading ahead pays only while the network sets the writer's pace. When storage is
the slower side (an S3 or SFTP upload, a slow disk, the hashing threads), bytes
ahead could only wait, so a share's `gate` (`archiver.transfer.writer_pace`: its backup's
writer is network-bound) must be open for it to take more than a head's
`head_room`, or an ahead share's `cushion` (room for its GET's first read, so
the writer never waits a round trip at the start of a segment); `regrant` when
it opens.

Waiting requests are granted heads first, then by `priority` (a share's place in
its backup: the segment the writer needs soonest first). Granting round-robin
instead keeps the segments ahead in lockstep: they fill and stall together, and
one stream at a time reads at full speed (measured: 3.2x one stream with four,
on a link that caps each connection, where nearest-first staggers them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Request:
    share: Share
    size: int
    granted: Callable[[], None]


class InFlight:
    """The budget: at most `limit` bytes received and not yet written."""

    def __init__(
        self, limit: int, *, head_room: int, kept_for_heads: int | None = None, cushion: int = 0
    ) -> None:
        self.limit = limit
        self._cushion = cushion
        self.used = 0
        self.peak = 0  # the most ever in use (tests, the benchmark)
        self._head_room = head_room
        self._kept = head_room if kept_for_heads is None else kept_for_heads
        self._heads = 0
        self._waiting: list[_Request] = []

    def share(self, priority: float = 0.0, gate: Callable[[], bool] | None = None) -> Share:
        """A new share, ahead until `Share.make_head`; a lower `priority` is served first,
        and while `gate()` is False it gets no more than the cushion (see the docstring)."""
        return Share(self, priority, gate)

    # -- used by Share

    def _has_room(self, share: Share, size: int) -> bool:
        # While its writer is not waiting for the network, a share holds at most what
        # keeps the writer busy (a head) or gets its GET going (ahead): more could only wait.
        gated = share.gate is not None and not share.gate()
        if share.head:
            if not share.outstanding:
                return True
            if gated and share.outstanding + size > self._head_room:
                return False
            return self.used + size <= self.limit
        if gated and share.outstanding + size > self._cushion:
            return False
        reserved = min(self.limit // 2, self._heads * self._kept)
        return self.used + size <= self.limit - reserved

    def regrant(self) -> None:
        """A gate opened (a writer waits for the network): grant what waits and now may."""
        self._grant_waiting()

    def _take(self, share: Share, size: int) -> None:
        self.used += size
        share.outstanding += size
        self.peak = max(self.peak, self.used)

    def _give_back(self, share: Share, size: int) -> None:
        size = min(size, share.outstanding)
        if size <= 0:
            return
        share.outstanding -= size
        self.used -= size
        if share.close_when_empty and not share.outstanding and not share.closed:
            share.close()  # grants what waits in turn
            return
        self._grant_waiting()

    def _ask(self, request: _Request) -> bool:
        if not self._waiting and self._has_room(request.share, request.size):
            self._take(request.share, request.size)
            return True
        if request.share.head and self._has_room(request.share, request.size):
            self._take(request.share, request.size)  # heads go before the queue
            return True
        self._waiting.append(request)
        return False

    def _withdraw(self, share: Share) -> None:
        self._waiting = [request for request in self._waiting if request.share is not share]
        self._grant_waiting()

    def _count_head(self, change: int) -> None:
        self._heads += change
        self._grant_waiting()

    def _grant_waiting(self) -> None:
        """Grant what now fits: heads first, then the others in the order they asked."""
        if not self._waiting:
            return
        waiting = sorted(
            self._waiting, key=lambda request: (not request.share.head, request.share.priority)
        )
        self._waiting = []
        granted = []
        for request in waiting:
            if self._has_room(request.share, request.size):
                self._take(request.share, request.size)
                granted.append(request)
            else:
                self._waiting.append(request)
        for request in granted:
            request.granted()


class Share:
    """One reader's part of the budget: what it holds, and whether it is a file's head."""

    def __init__(
        self, budget: InFlight, priority: float = 0.0, gate: Callable[[], bool] | None = None
    ) -> None:
        self._budget = budget
        self.priority = priority
        self.gate = gate
        self.head = False
        self.outstanding = 0
        self.closed = False
        self.close_when_empty = False

    def request(self, size: int, granted: Callable[[], None]) -> bool:
        """Take room for `size` bytes now (True), or queue the request (False) and call
        `granted` once the room is taken for us. One request at a time per share."""
        if self.closed:
            return True
        return self._budget._ask(_Request(self, size, granted))

    async def reserve(self, size: int) -> None:
        """Take room for `size` bytes, waiting as long as it takes."""
        waiter = asyncio.get_running_loop().create_future()

        def granted() -> None:
            if not waiter.done():
                waiter.set_result(None)

        if self.request(size, granted):
            return
        try:
            await waiter
        except BaseException:
            self.withdraw()
            if waiter.done() and not waiter.cancelled():
                self.release(size)  # granted just as we were cancelled
            raise

    def force(self, size: int) -> None:
        """Count `size` bytes that are in memory already (whether or not there is room)."""
        if not self.closed:
            self._budget._take(self, size)

    def release(self, size: int) -> None:
        """Give back the room of `size` bytes (written, or dropped)."""
        self._budget._give_back(self, size)

    def withdraw(self) -> None:
        """Forget a queued request."""
        self._budget._withdraw(self)

    def make_head(self) -> None:
        """This share's bytes are written as they come now (see the module's docstring)."""
        if not self.head and not self.closed:
            self.head = True
            self._budget._count_head(+1)

    def done(self) -> None:
        """The reader took its last chunk: close once everything it holds is written."""
        if self.outstanding:
            self.close_when_empty = True
        else:
            self.close()

    def close(self) -> None:
        """Give everything back and withdraw: the reader is done. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._budget._withdraw(self)
        self._budget._give_back(self, self.outstanding)
        if self.head:
            self._budget._count_head(-1)

"""A file cut into consecutive byte ranges, and each range's bytes on their way to the writer.

`plan` cuts the rest of a file into `Span`s of `segment_size`; each becomes a
`Segment`, fetched by its own ranged GET (`archiver.transfer.segment_fetch`) while the
writer takes the segments in order (`archiver.transfer.part_fetch`). A segment holds what
arrived and has not been taken yet; that memory is bounded by the in-flight
budget (`archiver.transfer.in_flight`), whose room each chunk gives back once written.
`Window` keeps the GETs of one backup close to its writer, so no connection opens
for bytes that could only wait.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from archiver.storage.base import Piece
from archiver.transfer.in_flight import InFlight, Share
from archiver.transfer.writer_pace import WriterPace


@dataclass(frozen=True)
class Span:
    """Bytes `[start, end)` of a file; `end` None: up to the end of the body (size unknown)."""

    start: int
    end: int | None

    @property
    def size(self) -> int | None:
        """How many bytes, if known."""
        return None if self.end is None else self.end - self.start


def plan(start: int, total: int, segment_size: int) -> list[Span]:
    """Bytes `[start, total)` as consecutive spans of `segment_size` (the last shorter)."""
    return [
        Span(offset, min(total, offset + segment_size))
        for offset in range(start, total, segment_size)
    ]


@dataclass
class Chunk:
    """Bytes of a segment as they arrived, and the budget room they hold until written."""

    pieces: list[Piece]
    size: int
    share: Share | None

    def written(self) -> None:
        """Storage has these bytes: their room goes back to the budget."""
        if self.share is not None:
            self.share.release(self.size)


class Segment:
    """One span of a file: fetched by one ranged GET at a time, taken by the writer in order.

    `position` is the next byte the fetch expects (a resume starts there). The chunks
    received and not taken yet wait here; `get` hands them out, then None once the
    span is complete, or raises what ended it.
    """

    def __init__(
        self, span: Span, budget: InFlight | None, place: int = 0, window: Window | None = None
    ) -> None:
        """`place`: where the span starts in the joined backup (nearest gets room first);
        `window`: its backup's, whose writer says when reading ahead is worth it."""
        self.span = span
        self.position = span.start
        gate = window.pace.network_bound if window is not None else None
        self.share = budget.share(priority=place, gate=gate) if budget is not None else None
        self.started = False
        self._chunks: deque[Chunk] = deque()
        self._complete = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def left(self) -> int | None:
        """Bytes still to fetch, if the end is known."""
        return None if self.span.end is None else self.span.end - self.position

    def put(self, pieces: list[Piece], size: int) -> None:
        """A chunk arrived (its room already taken from `share`)."""
        self.position += size
        self._chunks.append(Chunk(pieces, size, self.share))
        self._wake()

    def finish(self) -> None:
        """Every byte of the span arrived."""
        self._complete = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        """The segment will not complete: `get` raises `error` at once (what it holds is
        dropped: it belongs to a file that starts over, or to a backup that failed)."""
        if self._error is None:  # (even complete: what it holds is stale or unwanted now)
            self._error = error
            self.drop()
            self._wake()

    def drop(self) -> None:
        """Let go of every chunk held, and of the segment's share."""
        self._chunks.clear()
        if self.share is not None:
            self.share.close()

    def make_head(self) -> None:
        """The writer is taking this segment now: its bytes are written as they come."""
        if self.share is not None:
            self.share.make_head()

    def taken(self) -> None:
        """The writer took the last chunk: the share closes once all of it is written."""
        if self.share is not None:
            self.share.done()

    @property
    def ready(self) -> bool:
        """Whether `get` would return without waiting."""
        return bool(self._chunks) or self._complete or self._error is not None

    async def get(self) -> Chunk | None:
        """The next chunk in order; None once the span is complete."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._complete:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._chunks.popleft()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Window:
    """How far ahead of its writer one backup's GETs may start, and what sets its pace.

    `consumed` is where the writer is in the backup (bytes taken, all parts joined);
    a GET for bytes starting at `offset` (same count) waits until `offset - consumed`
    is under `size`. `pace` says whether the network or storage holds the writer up
    (`archiver.transfer.writer_pace`): segments ahead read on only when it is the network.
    """

    def __init__(self, size: int, consumed: int = 0, pace: WriterPace | None = None) -> None:
        self.size = size
        self.consumed = consumed
        self.pace = pace or WriterPace()
        self._moved = asyncio.Event()

    def advance(self, count: int) -> None:
        """The writer took `count` more bytes."""
        self.consumed += count
        self._moved.set()

    def admits(self, offset: int) -> bool:
        """Whether a GET for bytes from `offset` may start now."""
        return offset - self.consumed < self.size

    async def admit(self, offset: int) -> None:
        """Wait until a GET for bytes from `offset` may start."""
        while not self.admits(offset):
            self._moved.clear()
            await self._moved.wait()

"""A file-like reader for a worker thread, fed chunk by chunk from the event loop.

Libraries that only read file objects (stdlib `tarfile`, pyrage) run in a thread
of their own; the loop hands them a stream's chunks through a queue, so memory
stays a few chunks whatever the size. `FedReader` is the thread's side: it blocks
for the next chunk, serves `read(size)` from it, and ends the stream at `END`.
`ABORT` makes reads raise instead, so a reader never takes a stream cut short for
a whole one (pyrage would otherwise write a valid-looking, truncated file).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, Protocol

END = object()
"""Put after the last chunk: reads return b"" from then on."""

ABORT = object()
"""Put to abandon the stream: the next read that needs a chunk raises OSError."""


class Inbox(Protocol):
    """Where the loop puts chunks (bytes), then END or ABORT: a `queue.Queue` or `SimpleQueue`."""

    def get(self) -> object:
        """The next item, blocking until there is one."""


class FedReader(io.RawIOBase):
    """Blocking reads over the chunks of an `Inbox`, in order.

    `before_waiting` runs each time the reader has used up every chunk it took and is
    about to block for the next (a producer that paces itself by what was taken
    learns it here); `on_chunk(chunk, offset)` sees each chunk as it is taken, with
    the stream offset of its first byte.
    """

    def __init__(
        self,
        inbox: Inbox,
        *,
        before_waiting: Callable[[], None] | None = None,
        on_chunk: Callable[[bytes, int], None] | None = None,
    ) -> None:
        super().__init__()
        self._inbox = inbox
        self._before_waiting = before_waiting
        self._on_chunk = on_chunk
        self._current = memoryview(b"")
        self._ended = False
        self.received = 0  # bytes taken from the inbox
        self.position = 0  # bytes handed to the reader

    def readable(self) -> bool:
        """Always."""
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` bytes (all of the current chunk when negative); b"" at the end."""
        if not self._current and not self._take():
            return b""
        count = len(self._current) if size is None or size < 0 else size
        piece, self._current = self._current[:count], self._current[count:]
        self.position += len(piece)
        return bytes(piece)

    def readinto(self, buffer: Any) -> int:
        """Copy the next bytes into `buffer`; 0 at the end."""
        if not self._current and not self._take():
            return 0
        count = min(len(buffer), len(self._current))
        buffer[:count] = self._current[:count]
        self._current = self._current[count:]
        self.position += count
        return count

    def drain(self) -> None:
        """Take (and drop) the rest of the stream, so the feeding side never blocks on us."""
        while self._current or self._take():
            self.position += len(self._current)
            self._current = memoryview(b"")

    def _take(self) -> bool:
        """Wait for the next non-empty chunk; False at the end of the stream."""
        while not self._ended:
            if self._before_waiting is not None:
                self._before_waiting()
            item = self._inbox.get()
            if item is ABORT:
                raise OSError("the stream was abandoned")
            if item is END:
                self._ended = True
                break
            assert isinstance(item, bytes)
            if not item:
                continue
            if self._on_chunk is not None:
                self._on_chunk(item, self.received)
            self.received += len(item)
            self._current = memoryview(item)
            return True
        return False

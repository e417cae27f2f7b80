"""The thread-fed reader shared by the tar check and the pyrage streams."""

from __future__ import annotations

import queue
import threading

import pytest

from archiver.core.fed_reader import ABORT, END, FedReader


def test_reads_span_chunks_and_end_at_end() -> None:
    """Reads of any size see the chunks' bytes in order, then b"" for good after END."""
    inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
    for item in (b"abc", b"", b"defgh", END):
        inbox.put(item)
    seen: list[tuple[bytes, int]] = []
    reader = FedReader(inbox, on_chunk=lambda chunk, offset: seen.append((chunk, offset)))
    assert reader.read(2) == b"ab"
    assert reader.read(10) == b"c"  # never more than the current chunk
    buffer = bytearray(4)
    assert reader.readinto(buffer) == 4
    assert bytes(buffer) == b"defg"
    assert reader.read() == b"h"
    assert reader.read(5) == b""
    assert reader.read(5) == b""
    assert seen == [(b"abc", 0), (b"defgh", 3)]  # the empty chunk is skipped
    assert (reader.position, reader.received) == (8, 8)


def test_abort_makes_the_next_read_raise() -> None:
    """ABORT is never taken for the end of a whole stream: the read raises OSError."""
    inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
    inbox.put(b"data")
    inbox.put(ABORT)
    reader = FedReader(inbox)
    assert reader.read(100) == b"data"
    with pytest.raises(OSError, match="abandoned"):
        reader.read(100)


def test_before_waiting_runs_only_when_every_chunk_taken_is_used_up() -> None:
    """The producer hears "all taken" each time the reader is about to block, not per read."""
    inbox: queue.Queue[object] = queue.Queue()
    waits = []
    reader = FedReader(inbox, before_waiting=lambda: waits.append(reader.position))
    inbox.put(b"0123456789")
    got: list[bytes] = []
    thread = threading.Thread(target=lambda: got.extend(iter(lambda: reader.read(4), b"")))
    thread.start()
    inbox.put(b"ab")
    inbox.put(END)
    thread.join(timeout=30)
    assert b"".join(got) == b"0123456789ab"
    assert waits == [0, 10, 12]


def test_drain_takes_the_rest_so_the_feeder_never_blocks() -> None:
    """After a reader gives up, drain empties a bounded queue to its END, counting bytes."""
    inbox: queue.Queue[object] = queue.Queue(maxsize=1)
    reader = FedReader(inbox)

    def feed() -> None:
        for _ in range(5):
            inbox.put(b"x" * 100)
        inbox.put(END)

    feeder = threading.Thread(target=feed)
    feeder.start()
    assert reader.read(10) == b"x" * 10
    reader.drain()
    feeder.join(timeout=30)
    assert not feeder.is_alive()
    assert reader.position == 500

"""The chunk pipeline: one part's chunks hashed and written off the loop, in order."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from archiver.core.errors import PermanentStorageError
from archiver.storage.local import LocalStorage
from archiver.transfer.chunks import WRITE_SLICE, ChunkSink, PartHashes

MiB = 1024 * 1024


def pieces_of(data: bytes, size: int) -> list[bytes]:
    """`data` cut into pieces of `size` bytes, as the network would deliver it."""
    return [data[start : start + size] for start in range(0, len(data), size)]


class ThreadSegment:
    """A thread-writable segment that records every write and the thread it came from."""

    def __init__(self, fail_after: int | None = None, delay: float = 0.0) -> None:
        self.data = bytearray()
        self.writes: list[int] = []
        self.threads: set[str] = set()
        self.rewinds = 0
        self._fail_after = fail_after
        self._delay = delay

    def write_in_thread(self, pieces: Sequence[bytes]) -> None:
        """Append the pieces (after an optional delay), or fail past `fail_after` bytes."""
        if self._delay:
            threading.Event().wait(self._delay)
        if self._fail_after is not None and len(self.data) >= self._fail_after:
            raise PermanentStorageError("disk full")
        self.threads.add(threading.current_thread().name)
        self.writes.append(sum(len(piece) for piece in pieces))
        for piece in pieces:
            self.data += piece

    async def write(self, chunk: bytes) -> None:
        """The loop's path: not used when a thread can write."""
        raise AssertionError("a thread-writable segment is written from the write lane")

    async def rewind(self) -> None:
        """Forget what was written."""
        self.rewinds += 1
        self.data.clear()

    async def close(self) -> None:
        """Nothing to flush."""


class LoopSegment:
    """A segment only the event loop may write (as S3 and SFTP are)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    async def write(self, chunk: bytes) -> None:
        """Record the chunk."""
        self.chunks.append(chunk)

    async def rewind(self) -> None:
        """Forget what was written."""
        self.chunks.clear()

    async def close(self) -> None:
        """Nothing to flush."""


async def feed(sink: ChunkSink, data: bytes, *, chunk: int, piece: int) -> None:
    """Hand `data` to `sink` in chunks of `chunk` bytes made of `piece`-byte pieces."""
    for start in range(0, len(data), chunk):
        block = data[start : start + chunk]
        await sink.put(pieces_of(block, piece), len(block))


@pytest.fixture
def data() -> bytes:
    """A few MiB of random bytes."""
    return os.urandom(5 * MiB + 12345)


async def test_chunks_are_hashed_and_written_in_order_from_one_thread(data: bytes) -> None:
    """The file, the sha256 and the MD5 match the input; the writes come from one lane thread."""
    segment = ThreadSegment()
    hashes = PartHashes()
    hashes.restart(md5=True)
    sink = ChunkSink(segment, hashes, max_in_flight=2 * MiB)
    try:
        await feed(sink, data, chunk=MiB, piece=64 * 1024)
        await sink.drain()
    finally:
        await sink.close()
    assert bytes(segment.data) == data
    assert hashes.sha256.hexdigest() == hashlib.sha256(data).hexdigest()
    assert hashes.md5 is not None
    assert hashes.md5.hexdigest() == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert len(segment.threads) == 1
    assert threading.current_thread().name not in segment.threads


async def test_big_chunks_are_written_in_slices_of_at_most_1_mib(data: bytes) -> None:
    """A 4 MiB hand-off of 256 KiB pieces becomes writes of at most 1 MiB each."""
    segment = ThreadSegment()
    sink = ChunkSink(segment, PartHashes(), max_in_flight=8 * MiB)
    try:
        await feed(sink, data, chunk=4 * MiB, piece=256 * 1024)
        await sink.drain()
    finally:
        await sink.close()
    assert bytes(segment.data) == data
    assert max(segment.writes) <= WRITE_SLICE
    assert len(segment.writes) >= len(data) // WRITE_SLICE


async def test_a_loop_only_segment_gets_whole_chunks_in_order(data: bytes) -> None:
    """S3/SFTP-like segments are written on the loop, one joined chunk per hand-off."""
    segment = LoopSegment()
    hashes = PartHashes()
    sink = ChunkSink(segment, hashes, max_in_flight=2 * MiB)
    try:
        await feed(sink, data, chunk=MiB, piece=100_000)
        await sink.drain()
    finally:
        await sink.close()
    assert b"".join(segment.chunks) == data
    assert len(segment.chunks) == -(-len(data) // MiB)
    assert hashes.sha256.hexdigest() == hashlib.sha256(data).hexdigest()


async def test_the_joined_hash_continues_from_the_previous_part(data: bytes) -> None:
    """Part 1's sha256 starts the joined one; part 2 feeds its own and the joined digest."""
    first, second = data[: 2 * MiB], data[2 * MiB :]
    hashes_one = PartHashes()
    for part, hashes in ((first, hashes_one), (second, PartHashes(joined=hashes_one.whole()))):
        sink = ChunkSink(ThreadSegment(), hashes, max_in_flight=2 * MiB)
        try:
            await feed(sink, part, chunk=MiB, piece=65536)
            await sink.drain()
        finally:
            await sink.close()
        assert hashes.sha256.hexdigest() == hashlib.sha256(part).hexdigest()
    assert hashes.whole().hexdigest() == hashlib.sha256(data).hexdigest()


async def test_restart_rolls_the_joined_hash_back_to_the_part_start(data: bytes) -> None:
    """A part that starts over (a 200 to a resume) forgets its bytes in every digest."""
    before = hashlib.sha256(b"part one")
    hashes = PartHashes(joined=before)
    segment = ThreadSegment()
    sink = ChunkSink(segment, hashes, max_in_flight=2 * MiB)
    try:
        await feed(sink, b"garbage that will be sent again", chunk=MiB, piece=7)
        await sink.rewind()
        hashes.restart(md5=False)
        await feed(sink, data, chunk=MiB, piece=65536)
        await sink.drain()
    finally:
        await sink.close()
    assert segment.rewinds == 1
    assert bytes(segment.data) == data
    assert hashes.sha256.hexdigest() == hashlib.sha256(data).hexdigest()
    assert hashes.whole().hexdigest() == hashlib.sha256(b"part one" + data).hexdigest()


async def test_a_pre_fed_sha256_continues_from_where_it_stopped(data: bytes) -> None:
    """A part resumed from disk: its sha256, fed with bytes 0..N, goes on from byte N."""
    done, rest = data[:MiB], data[MiB:]
    sink = ChunkSink(ThreadSegment(), PartHashes(sha256=hashlib.sha256(done)), max_in_flight=MiB)
    try:
        await feed(sink, rest, chunk=MiB, piece=65536)
        await sink.drain()
    finally:
        await sink.close()
    assert sink.hashes.sha256.hexdigest() == hashlib.sha256(data).hexdigest()


async def test_a_write_error_surfaces_at_a_later_hand_off_or_the_drain(data: bytes) -> None:
    """A lane's error (a full disk) is raised to the caller, never lost."""
    sink = ChunkSink(ThreadSegment(fail_after=2 * MiB), PartHashes(), max_in_flight=2 * MiB)

    async def feed_all() -> None:
        await feed(sink, data, chunk=MiB, piece=65536)
        await sink.drain()

    try:
        with pytest.raises(PermanentStorageError, match="disk full"):
            await feed_all()
    finally:
        await sink.close()


async def _peak_in_flight(sink: ChunkSink, data: bytes) -> int:
    """Feed `data` in 1 MiB blocks; the most bytes the sink held in flight at once."""
    seen = 0
    try:
        for start in range(0, len(data), MiB):
            block = data[start : start + MiB]
            await sink.put([block], len(block))
            seen = max(seen, sink._bytes_in_flight)
        await sink.drain()
    finally:
        await sink.close()
    return seen


async def test_memory_in_flight_stays_within_the_budget(data: bytes) -> None:
    """With slow writes, the producer waits: never more than the budget in flight."""
    sink = ChunkSink(ThreadSegment(delay=0.01), PartHashes(), max_in_flight=2 * MiB)
    assert await _peak_in_flight(sink, data) <= 2 * MiB


async def test_close_waits_for_the_running_write_and_drops_the_queued_ones() -> None:
    """After close, no lane touches the segment any more, even when the caller was cancelled."""
    segment = ThreadSegment(delay=0.2)
    sink = ChunkSink(segment, PartHashes(), max_in_flight=64 * MiB)
    for _ in range(5):
        await sink.put([b"x" * 1000], 1000)
    await asyncio.sleep(0.05)  # the first write is running, four are queued
    await sink.close()
    written = bytes(segment.data)
    await asyncio.sleep(0.3)
    assert bytes(segment.data) == written
    assert len(written) < 5000


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalStorage]:
    """A local storage."""
    storage = LocalStorage(tmp_path / "archive")
    yield storage
    await storage.aclose()


async def test_a_local_segment_is_written_from_the_write_lane(
    local: LocalStorage, data: bytes
) -> None:
    """Local storage takes the thread path; the file holds exactly the bytes."""
    upload = await local.start_upload("a/b.tar")
    segment = await upload.open_segment(0, 0)
    sink = ChunkSink(segment, PartHashes(), max_in_flight=4 * MiB)
    try:
        await feed(sink, data, chunk=2 * MiB, piece=200_000)
        await sink.drain()
    finally:
        await sink.close()
    await segment.close()
    await upload.commit(size=len(data), sha256=sink.hashes.sha256.hexdigest())
    assert (local.root / "a" / "b.tar").read_bytes() == data


async def test_a_local_write_after_abort_fails_instead_of_landing_elsewhere(
    local: LocalStorage,
) -> None:
    """Once the upload is aborted, a late write from a thread raises: the descriptor is gone."""
    upload = await local.start_upload("a/b.tar")
    segment = await upload.open_segment(0, 0)
    await upload.abort()
    with pytest.raises(PermanentStorageError, match="already finished"):
        await asyncio.to_thread(segment.write_in_thread, [b"late"])


async def test_early_writeback_leaves_the_bytes_intact(
    local: LocalStorage, data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writeback advice every MiB (instead of 32) changes nothing in the file, rewind included."""
    import archiver.storage.local as local_module

    monkeypatch.setattr(local_module, "WRITEBACK_STEP", MiB)
    upload = await local.start_upload("a/b.tar")
    await upload.open_segment(0, 0)
    segment = await upload.open_segment(1, 1000)
    sink = ChunkSink(segment, PartHashes(), max_in_flight=4 * MiB)
    try:
        await feed(sink, b"y" * 3 * MiB, chunk=MiB, piece=65536)
        await sink.rewind()
        await feed(sink, data, chunk=MiB, piece=65536)
        await sink.drain()
    finally:
        await sink.close()
    await upload.commit(size=1000 + len(data), sha256="")
    assert (local.root / "a" / "b.tar").read_bytes()[1000:] == data


async def test_the_in_flight_budget_is_asked_again_at_every_hand_off(data: bytes) -> None:
    """A budget that shrinks (more parts started elsewhere) is honoured from the next chunk."""
    budget = [4 * MiB]
    seen = []
    sink = ChunkSink(ThreadSegment(delay=0.01), PartHashes(), max_in_flight=lambda: budget[0])
    try:
        for index, start in enumerate(range(0, len(data), MiB)):
            if index == 2:
                budget[0] = MiB
            block = data[start : start + MiB]
            await sink.put([block], len(block))
            seen.append(sink._bytes_in_flight)
        await sink.drain()
    finally:
        await sink.close()
    assert max(seen[:2]) <= 4 * MiB
    assert max(seen[2:]) <= MiB


async def test_a_loop_only_segment_keeps_two_chunks_in_flight_at_most(data: bytes) -> None:
    """S3/SFTP segments buffer what they send: the lanes only hash, two chunks ahead at most."""
    sink = ChunkSink(LoopSegment(), PartHashes(), max_in_flight=64 * MiB)
    assert await _peak_in_flight(sink, data) <= 2 * MiB

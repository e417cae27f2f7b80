"""One part's bytes on their way into storage: hashed and written off the event loop, in order.

`archiver.transfer.download` receives a part's body and hands it over in chunks: lists
of the pieces the network delivered, never joined (joining is a copy). Each
chunk becomes one job on each *lane*, a lane being one thread that runs its
jobs in the order they came:

- the write lane feeds the part's sha256, then writes the same buffers, in
  slices of at most 1 MiB (single writes of 2 MiB or more cost several times
  the kernel time on our VMs), when the segment can be written from a thread
  (`ThreadWritableSegment`: a local file). S3 and SFTP segments are written on
  the event loop instead, in order, while the lanes hash;
- the MD5 lane feeds the MD5 that the ETag is checked against (the slowest hash,
  on its own so that it never holds up the write);
- the joined lane feeds the sha256 of the whole joined file, for every part
  but the first (the first part's sha256 *is* the start of the joined one).

Several chunks are in flight (up to `max_in_flight` bytes, which may change as
other parts start and end), so the event loop goes on receiving while the lanes
work, and it wakes for a lane only when the budget is spent. The pieces are
shared, read-only, by every lane; nothing is copied between the socket and the
page cache.

The write lane is also the seam for what must see the plaintext in order before
storage: with the `age` binary as the encryptor, the segment is one of
`archiver.transfer.sealed_upload` whose `write_in_thread` hands the plaintext
to age, so the chunks reach it from this lane. `PartHashes` accepts digests
already fed with the first bytes of a part, so a part can also start part-way
(`start`).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from archiver.storage.base import Piece, SegmentWriter, ThreadWritableSegment

if TYPE_CHECKING:
    from _hashlib import HASH as Hash

# The largest single write: single pwrites of 2 MiB or more were measured at 4-7x
# the kernel time per byte of 1 MiB ones on our VMs.
WRITE_SLICE = 1024 * 1024


class PartHashes:
    """The digests one part's bytes feed, and how to start them over.

    `joined` is the joined file's sha256 as it stood before this part; None for the
    first part, whose own sha256 is the start of the joined one (hashed once).
    `sha256` may come already fed with the part's first bytes (a part resumed from
    disk); `restart` always goes back to the part's first byte.
    """

    def __init__(self, *, joined: Hash | None = None, sha256: Hash | None = None) -> None:
        self.sha256: Hash = sha256 if sha256 is not None else hashlib.sha256()
        self.md5: Hash | None = None
        self.joined = joined
        self._joined_at_start = joined.copy() if joined is not None else None

    def restart(self, *, md5: bool) -> None:
        """Forget every byte fed: the part starts over (with an MD5 when asked)."""
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False) if md5 else None
        if self._joined_at_start is not None:
            self.joined = self._joined_at_start.copy()

    def whole(self) -> Hash:
        """The joined file's sha256 once this part is fed (the next part's `joined`)."""
        return self.joined if self.joined is not None else self.sha256


def _feed(digest: Hash, pieces: Sequence[Piece]) -> None:
    for piece in pieces:
        digest.update(piece)  # releases the GIL: the lanes hash in parallel


def _slices(pieces: Sequence[Piece]) -> list[list[Piece]]:
    """The pieces grouped into runs of at most WRITE_SLICE bytes (a bigger piece alone)."""
    runs: list[list[Piece]] = []
    run: list[Piece] = []
    size = 0
    for piece in pieces:
        if run and size + len(piece) > WRITE_SLICE:
            runs.append(run)
            run, size = [], 0
        run.append(piece)
        size += len(piece)
    if run:
        runs.append(run)
    return runs


def _hash_and_write(
    digest: Hash, pieces: Sequence[Piece], write: Callable[[Sequence[Piece]], None] | None
) -> None:
    """The write lane's job: hash a slice, write it while it is still in cache, next slice."""
    if write is None:
        _feed(digest, pieces)
        return
    for run in _slices(pieces):
        _feed(digest, run)
        write(run)


def _joined(pieces: Sequence[Piece]) -> bytes:
    """One bytes object (what the loop-side segments take), copied only if need be."""
    if len(pieces) == 1 and isinstance(pieces[0], bytes):
        return pieces[0]
    return b"".join(pieces)


class _Chunk:
    """One chunk's jobs, one per lane, its size, and who hears when it is written."""

    __slots__ = ("jobs", "on_written", "size", "written_on_loop")

    def __init__(
        self, jobs: list[Future[None]], size: int, on_written: Callable[[], None] | None
    ) -> None:
        self.jobs = jobs
        self.size = size
        self.on_written = on_written
        self.written_on_loop = True  # False until a loop-side segment took the bytes

    def done(self) -> bool:
        return all(job.done() for job in self.jobs)

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Call `on_written` on the loop as soon as every lane is done with the chunk."""
        if self.on_written is None:
            return
        for job in self.jobs:
            job.add_done_callback(lambda _: self._lane_done(loop))

    def _lane_done(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.done():  # two lanes may both see it: `_written` runs once
            loop.call_soon_threadsafe(self._written)

    def _written(self) -> None:
        if self.on_written is not None and self.written_on_loop and self.done():
            on_written, self.on_written = self.on_written, None
            on_written()

    def loop_write_done(self) -> None:
        """The loop-side segment has the bytes (S3, SFTP)."""
        self.written_on_loop = True
        self._written()


class ChunkSink:
    """Hashes and writes one part's chunks in order, off the event loop, several in flight.

    `put` hands a chunk over, `drain` waits until everything handed over is hashed and
    written (raising the first error), `rewind` starts the part over, `close` (always,
    in a `finally`) waits for whatever a lane is running and stops the lanes, so no
    write can land after the caller has moved on.
    """

    def __init__(
        self,
        segment: SegmentWriter,
        hashes: PartHashes,
        *,
        max_in_flight: int | Callable[[], int],
    ) -> None:
        self._segment = segment
        self._hashes = hashes
        self._writer = segment if isinstance(segment, ThreadWritableSegment) else None
        limit = max_in_flight
        self._max_in_flight = limit if callable(limit) else lambda: limit
        self._lanes: dict[str, ThreadPoolExecutor] = {}
        self._chunks: deque[_Chunk] = deque()
        self._bytes_in_flight = 0

    @property
    def hashes(self) -> PartHashes:
        """The digests this sink feeds."""
        return self._hashes

    def _lane(self, name: str) -> ThreadPoolExecutor:
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = ThreadPoolExecutor(1, thread_name_prefix=f"c66-{name}")
        return lane

    async def put(
        self, pieces: list[Piece], size: int, on_written: Callable[[], None] | None = None
    ) -> None:
        """Queue one chunk on every lane; wait only while too much is in flight.

        `on_written` is called (on the loop) once the chunk is hashed and in storage's
        hands, as soon as that is so (not when the next chunk comes): the in-flight
        budget gets its room back then (`archiver.transfer.in_flight`).
        """
        await self._make_room(size)
        hashes = self._hashes
        write = None if self._writer is None else self._writer.write_in_thread
        jobs = [self._lane("write").submit(_hash_and_write, hashes.sha256, pieces, write)]
        if hashes.md5 is not None:
            jobs.append(self._lane("md5").submit(_feed, hashes.md5, pieces))
        if hashes.joined is not None:
            jobs.append(self._lane("joined").submit(_feed, hashes.joined, pieces))
        chunk = _Chunk(jobs, size, on_written)
        chunk.written_on_loop = self._writer is not None
        chunk.watch(asyncio.get_running_loop())
        self._chunks.append(chunk)
        self._bytes_in_flight += size
        if self._writer is None:  # S3, SFTP: written on the loop, in order, while lanes hash
            await self._segment.write(_joined(pieces))
            chunk.loop_write_done()

    async def _make_room(self, size: int) -> None:
        self._collect_finished()
        limit = self._max_in_flight()
        if self._writer is None:
            # The segment buffers what it sends itself (S3 parts): the lanes only hash,
            # and two chunks keep them busy without doubling what S3 holds.
            limit = min(limit, 2 * size)
        while self._chunks and self._bytes_in_flight + size > limit:
            await self._finish_oldest()

    def _collect_finished(self) -> None:
        """Retire finished chunks without waiting (and without waking the loop)."""
        while self._chunks and self._chunks[0].done():
            self._retire(self._chunks.popleft())

    async def _finish_oldest(self) -> None:
        chunk = self._chunks[0]
        for job in chunk.jobs:
            if not job.done():
                await asyncio.wrap_future(job)
        self._retire(self._chunks.popleft())

    def _retire(self, chunk: _Chunk) -> None:
        self._bytes_in_flight -= chunk.size
        for job in chunk.jobs:
            job.result()  # a lane's error surfaces here

    async def drain(self) -> None:
        """Wait until every chunk handed over is hashed and written; raise the first error."""
        while self._chunks:
            await self._finish_oldest()

    async def rewind(self) -> None:
        """Drain, then start the segment over (the caller restarts the hashes)."""
        await self.drain()
        await self._segment.rewind()

    async def close(self) -> None:
        """Cancel queued jobs, wait for the running ones, stop the lanes. Errors are dropped.

        Called in a `finally`: whatever went wrong was raised already. A second
        cancellation can cut the wait short; the storage still never writes after
        its upload ends (see `LocalUpload`), so nothing lands in someone else's file.
        """
        jobs = [job for chunk in self._chunks for job in chunk.jobs]
        self._chunks.clear()
        self._bytes_in_flight = 0
        running = [asyncio.wrap_future(job) for job in jobs if not job.cancel()]
        try:
            if running:
                await asyncio.wait(running)
                for job in running:
                    if not job.cancelled():
                        job.exception()  # retrieved, so asyncio does not log it again
        finally:
            for lane in self._lanes.values():
                lane.shutdown(wait=False)
            self._lanes.clear()

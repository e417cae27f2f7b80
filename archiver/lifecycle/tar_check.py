"""Is a byte stream a whole, readable tar? Checked as it streams, in bounded memory.

stdlib `tarfile` in stream mode (`r|`) reads every member to its end in a
worker thread; the async side feeds it chunk by chunk through a small bounded
queue. `tarfile` alone misses two kinds of damage: it takes a garbled header in
the middle, or a cut exactly at a member boundary, for the end of the archive.
So the check also requires the end-of-archive marker (two zero blocks) after
the last member, and nothing but zeros after that.
"""

from __future__ import annotations

import asyncio
import io
import queue
import tarfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any

_EOF = b""
_END_MARKER = 2 * tarfile.BLOCKSIZE
_IN_FLIGHT = 4  # chunks queued for the tar thread at most
_READ_SIZE = 1024 * 1024


class _QueueReader(io.RawIOBase):
    """A blocking reader over chunks put in a queue; an empty chunk ends the stream."""

    def __init__(self, chunks: queue.Queue[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._current = memoryview(b"")
        self._ended = False
        self.position = 0
        self.last_nonzero = -1  # offset of the last non-zero byte seen so far

    def readable(self) -> bool:
        """Always."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Copy the next bytes into `buffer`, waiting for a chunk when none is left."""
        while not self._current and not self._ended:
            chunk = self._chunks.get()
            if chunk is _EOF or not chunk:
                self._ended = True
                break
            self._note_nonzero(chunk)
            self._current = memoryview(chunk)
        count = min(len(buffer), len(self._current))
        buffer[:count] = self._current[:count]
        self._current = self._current[count:]
        self.position += count
        return count

    def _note_nonzero(self, chunk: bytes) -> None:
        stripped = len(chunk.rstrip(b"\0"))  # fast: scans from the end, stops at data
        if stripped:
            self.last_nonzero = self.position + len(self._current) + stripped - 1

    def drain(self) -> None:
        """Read (and discard) the rest of the stream, still noting non-zero bytes."""
        scratch = bytearray(_READ_SIZE)
        while self.readinto(scratch):
            pass


def _check_tar(reader: _QueueReader) -> str | None:
    """Read every member to its end; None when the tar is whole, else what is wrong."""
    try:
        with tarfile.open(fileobj=reader, mode="r|") as archive:
            members = 0
            for member in archive:
                members += 1
                _read_member(archive, member)
            end = archive.offset
    except (tarfile.TarError, EOFError, OSError) as error:
        reader.drain()
        return f"not a readable tar: {error}"
    reader.drain()
    if members == 0:
        return "not a readable tar: no member"
    if reader.last_nonzero >= end:
        return f"not a readable tar: data after its end at byte {end} (a garbled header?)"
    if reader.position - end < _END_MARKER:
        return "not a readable tar: it ends without the end-of-archive marker (truncated?)"
    return None


def _read_member(archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
    data = archive.extractfile(member)
    if data is not None:
        while data.read(_READ_SIZE):
            pass


class TarChecker:
    """Feed a stream's chunks in order, then `finish` for the verdict."""

    def __init__(self, executor: ThreadPoolExecutor) -> None:
        self._chunks: queue.Queue[bytes] = queue.Queue(maxsize=_IN_FLIGHT)
        self._reader = _QueueReader(self._chunks)
        loop = asyncio.get_running_loop()
        self._verdict = loop.run_in_executor(executor, _check_tar, self._reader)

    async def feed(self, chunk: bytes) -> None:
        """Hand the tar thread the next chunk (waits while it is behind)."""
        if chunk and not self._verdict.done():
            await asyncio.get_running_loop().run_in_executor(None, self._chunks.put, chunk)

    async def finish(self) -> str | None:
        """End the stream; None when the tar was whole, else what is wrong with it."""
        if not self._verdict.done():
            await asyncio.get_running_loop().run_in_executor(None, self._chunks.put, _EOF)
        return await self._verdict

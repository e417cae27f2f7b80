"""Is a byte stream a whole, readable tar? Checked as it streams, in bounded memory.

stdlib `tarfile` in stream mode (`r|`) reads every member to its end in a
worker thread; the async side feeds it chunk by chunk through a small bounded
queue (`archiver.core.fed_reader`). `tarfile` alone misses two kinds of damage:
it takes a garbled header in the middle, or a cut exactly at a member boundary,
for the end of the archive.
So the check also requires the end-of-archive marker (two zero blocks) after
the last member, and nothing but zeros after that.
"""

from __future__ import annotations

import asyncio
import queue
import tarfile
from concurrent.futures import ThreadPoolExecutor

from archiver.core.fed_reader import END, FedReader

_END_MARKER = 2 * tarfile.BLOCKSIZE
_IN_FLIGHT = 4  # chunks queued for the tar thread at most
_READ_SIZE = 1024 * 1024


class _Zeros:
    """Where the last non-zero byte of the stream seen so far is."""

    def __init__(self) -> None:
        self.last_nonzero = -1

    def note(self, chunk: bytes, offset: int) -> None:
        """See `chunk`, which starts at byte `offset` of the stream."""
        stripped = len(chunk.rstrip(b"\0"))  # fast: scans from the end, stops at data
        if stripped:
            self.last_nonzero = offset + stripped - 1


def _check_tar(reader: FedReader, zeros: _Zeros) -> str | None:
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
    if zeros.last_nonzero >= end:
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
        self._chunks: queue.Queue[object] = queue.Queue(maxsize=_IN_FLIGHT)
        zeros = _Zeros()
        reader = FedReader(self._chunks, on_chunk=zeros.note)
        loop = asyncio.get_running_loop()
        self._verdict = loop.run_in_executor(executor, _check_tar, reader, zeros)

    async def feed(self, chunk: bytes) -> None:
        """Hand the tar thread the next chunk (waits while it is behind)."""
        if chunk and not self._verdict.done():
            await asyncio.get_running_loop().run_in_executor(None, self._chunks.put, chunk)

    async def finish(self) -> str | None:
        """End the stream; None when the tar was whole, else what is wrong with it."""
        if not self._verdict.done():
            await asyncio.get_running_loop().run_in_executor(None, self._chunks.put, END)
        return await self._verdict

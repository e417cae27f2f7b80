"""Writes to an SFTP file with several requests in flight: in file order, bounded, resent once.

Awaiting each write before sending the next leaves the link idle for a round
trip per chunk: 1 MiB per 20 ms is 50 MB/s at most, whatever the line. So a
segment's `write` sends its chunk and returns while the server is still writing
it, and waits only when all of the storage's `max_concurrent_writes` slots are
taken (shared by every upload): that wait is the back-pressure that stops the
download when the server is slow, so memory stays at those slots' chunks,
whatever the file's size. A write's bytes are kept until the server
acknowledged them.

Requests leave in file order: a write goes as one request per block of the
server's write length (`_requests`), each started by its own task, and asyncio
runs the first steps of tasks in the order they were created. OpenSSH's
sftp-server applies requests one at a time in the order they arrive. So the
part file on the server always holds a prefix of what was written, even after a
kill -9 of this process: its size stays a safe resume point.

`acknowledged` is where the bytes the server confirmed end, without a gap: only
those count as durable when an upload is suspended (the part file is cut back
to them, see `SftpUpload.suspend`). A failed write surfaces at the next `write`
or at `close`. When the connection drops, every request in flight fails with
it: once they have all ended, the upload reconnects (once) and the writes not
yet acknowledged are sent again, in order; a write that fails that way a second
time fails the segment.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

import asyncssh

from archiver.core.errors import PermanentStorageError
from archiver.storage.sftp_errors import DROPPED

Handle = asyncssh.SFTPClientFile
# asyncssh starts at most `max_requests` blocks of a write at once (16 at least); a write
# of more would start its later blocks after the next write's first ones (out of order).
BLOCKS_PER_WRITE = 16


class WriteTarget(Protocol):
    """The upload a segment writes into (`SftpUpload`)."""

    def live_handle(self) -> Handle:
        """The open handle of the part file; raises once the upload is finished."""

    def largest_write(self) -> int:
        """The most one request may carry, so that its blocks all start at once."""

    async def reopen(self, stale: Handle) -> None:
        """Reconnect and open the part file again, unless another segment already has."""

    async def failure(self, error: BaseException) -> BaseException:
        """The StorageError `error` stands for, naming the upload."""


class _Write:
    """One write request: its bytes stay here until the server acknowledged them."""

    __slots__ = ("data", "handle", "offset", "resent", "task")

    def __init__(self, offset: int, data: bytes) -> None:
        self.offset = offset
        self.data = data
        self.resent = False
        self.handle: Handle | None = None
        self.task: asyncio.Future[list[int]] | None = None

    @property
    def end(self) -> int:
        return self.offset + len(self.data)

    def failed(self) -> BaseException | None:
        task = self.task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    def succeeded(self) -> bool:
        task = self.task
        return task is not None and task.done() and not task.cancelled() and not task.exception()


class PipelinedSegment:
    """One segment of an SFTP upload, written with several requests in flight."""

    def __init__(self, upload: WriteTarget, offset: int, slots: asyncio.Semaphore) -> None:
        if offset < 0:
            raise ValueError(f"segment offset must be >= 0, not {offset}")
        self._upload = upload
        self._slots = slots
        self.offset = offset
        self._position = offset  # where the next write goes
        self._acknowledged = offset
        self._pending: deque[_Write] = deque()  # sent, not yet acknowledged, in file order
        self._abandoned = False

    @property
    def acknowledged(self) -> int:
        """End of the bytes from `offset` on that the server acknowledged, without a gap."""
        return self._acknowledged

    async def write(self, chunk: bytes) -> None:
        """Send `chunk` at the segment's position; wait only for a free slot."""
        if self._abandoned:
            raise PermanentStorageError("this upload was stopped: its segment takes no more writes")
        largest = self._upload.largest_write()
        pieces = [chunk] if len(chunk) <= largest else [
            chunk[start : start + largest] for start in range(0, len(chunk), largest)
        ]
        for piece in pieces:
            if not piece:
                continue
            await self._settle()
            await self._slots.acquire()
            self._send(_Write(self._position, piece))
            self._position += len(piece)

    async def close(self) -> None:
        """Wait until the server acknowledged every write; raise what failed."""
        while self._pending:
            await self._settle()
            running = self._running()
            if running:
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            self._advance()

    async def rewind(self) -> None:
        """Let every write end (raising what failed), then start again at the offset."""
        await self.close()
        self._position = self._acknowledged = self.offset

    def abandon(self) -> None:
        """Send nothing more, not even again: the upload is being given up.

        Writes in flight go on; their outcome only moves `acknowledged` (see
        `settled`), a failure is never raised.
        """
        self._abandoned = True

    async def settled(self) -> None:
        """Wait until every write in flight has ended, acknowledged or not."""
        running = self._running()
        if running:
            await asyncio.wait(running)
        self._advance()

    # -- inside ------------------------------------------------------------------------------

    def _running(self) -> list[asyncio.Future[list[int]]]:
        return [write.task for write in self._pending if write.task and not write.task.done()]

    def _send(self, write: _Write) -> None:
        """Start the request (it leaves when the task first runs, in creation order)."""
        try:
            handle = self._upload.live_handle()
        except BaseException:
            self._slots.release()
            raise
        write.handle = handle
        write.task = _requests(handle, write.data, write.offset)
        write.task.add_done_callback(self._ended)
        if not write.resent:
            self._pending.append(write)

    def _ended(self, task: asyncio.Future[list[int]]) -> None:
        self._slots.release()
        if not task.cancelled():
            task.exception()  # looked at by `_settle`; retrieved here so asyncio never logs it
        self._advance()

    def _advance(self) -> None:
        """Retire the acknowledged writes at the head of the queue."""
        pending = self._pending
        while pending and pending[0].succeeded():
            self._acknowledged = pending.popleft().end

    async def _settle(self) -> None:
        """Deal with a failed write: send again after a dropped connection, or raise."""
        failed = next((write for write in self._pending if write.failed() is not None), None)
        if failed is None:
            return
        error = failed.failed()
        assert error is not None
        if self._abandoned or failed.resent or not isinstance(error, DROPPED):
            raise await self._upload.failure(error) from error
        await self._send_again(failed.handle)

    async def _send_again(self, stale: Handle | None) -> None:
        """After a drop: once every request has ended, reconnect and resend what is missing."""
        await self.settled()  # some may have been acknowledged before the connection went
        if stale is not None:
            await self._upload.reopen(stale)
        for write in list(self._pending):
            await self._slots.acquire()
            write.resent = True
            self._send(write)


def _requests(handle: Handle, data: bytes, offset: int) -> asyncio.Future[list[int]]:
    """Send `data` at `offset` as one request per block of the server's write length.

    asyncssh's own split of a longer write loses track of its blocks when the connection
    drops (a keepalive timeout fails them with an error its clean-up does not expect): their
    failures were never retrieved, and asyncio logged a traceback for each. Here every block
    is a single-request write (no task of asyncssh's left behind) and `gather` retrieves the
    outcome of each, failed or not. The blocks still leave in file order: their tasks are
    created, so first run, in that order.
    """
    block = handle.write_len or len(data) or 1
    return asyncio.gather(*(
        handle.write(data[start : start + block], offset + start)
        for start in range(0, len(data), block)
    ))

"""An SFTP upload: a part file on the server, written by pipelined segments, renamed on commit.

The remote file is `<final>.<random>.part` (a random stem per upload, because
SFTP has no inode numbers: a unique name is how a stale upload is told from the
newer one that replaced it). All segments share one file handle, since SFTP
writes name their offset; each segment keeps several writes in flight
(`archiver.storage.sftp_writes`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import asyncssh
import structlog

from archiver.core.errors import IntegrityError, PermanentStorageError
from archiver.storage.base import UploadEnd
from archiver.storage.sftp_errors import MISSING, SFTP_FAILURES, remove_if_present
from archiver.storage.sftp_reads import read_blocks
from archiver.storage.sftp_writes import BLOCKS_PER_WRITE, PipelinedSegment

log = structlog.get_logger(__name__)

_T = TypeVar("_T")
Client = asyncssh.SFTPClient
Handle = asyncssh.SFTPClientFile

# Part files are opened for reading too: a resumed upload reads its durable bytes back.
READ_WRITE = asyncssh.FXF_READ | asyncssh.FXF_WRITE


class SftpServer(Protocol):
    """What an upload needs of its server (`SftpConnection`): the shared connection and helpers."""

    write_limit: asyncio.Semaphore

    def url(self, remote_path: str) -> str:
        """`sftp://user@host:port/absolute/path` for a remote path."""

    async def client(self) -> Client:
        """The shared SFTP client, connecting first when there is none."""

    async def drop_connection(self, broken: Client) -> None:
        """Forget the connection of `broken` (unless already replaced)."""

    async def twice(
        self,
        location: str,
        action: Callable[[], Awaitable[_T]],
        recover: Callable[[], Awaitable[None]],
        *,
        writing: bool = False,
    ) -> _T:
        """Run `action`; when the connection dropped, `recover` and run it once more."""

    async def run(
        self, location: str, action: Callable[[Client], Awaitable[_T]], *, writing: bool = False
    ) -> _T:
        """Run `action` on the shared client, reconnecting once; errors become StorageErrors."""

    async def classified(
        self, error: BaseException, location: str, *, writing: bool = False
    ) -> BaseException:
        """The StorageError an SFTP error stands for (`writing`: a bare 'Failure' is no room)."""

    async def fsync(self, handle: Handle) -> None:
        """fsync@openssh.com where the server has it."""

    async def rename_into_place(self, client: Client, part: str, final: str) -> None:
        """Atomic rename where the server can."""


class SftpUpload:
    """A remote file assembled at `<final>.<random>.part`, renamed into place on commit."""

    def __init__(
        self, storage: SftpServer, final: str, part: str, client: Client, handle: Handle,
        *, durable: int = 0,
    ) -> None:
        self._storage = storage
        self._final = final
        self._part = part
        self._client = client  # the connection the handle lives on
        self._handle: Handle | None = handle
        self._location = storage.url(final)
        self._durable = durable  # bytes an earlier process left (a resumed upload)
        self._segments: list[PipelinedSegment] = []
        self._reopen_lock = asyncio.Lock()
        self._end = UploadEnd(self._location)

    def live_handle(self) -> Handle:
        """The part file's handle; raises once the upload is finished."""
        self._end.check_open()
        if self._handle is None:  # between a dropped connection and its reopening
            raise self._end.finished()
        return self._handle

    def largest_write(self) -> int:
        """What one write request may carry (asyncssh starts all its blocks at once)."""
        return BLOCKS_PER_WRITE * self._client.limits.max_write_len

    async def failure(self, error: BaseException) -> BaseException:
        """The StorageError a failed write stands for."""
        if isinstance(error, ValueError):  # asyncssh: the handle was closed under the write
            return self._end.finished()
        return await self._storage.classified(error, self._location, writing=True)

    async def open_segment(self, index: int, offset: int) -> PipelinedSegment:
        """A writer at `offset`; the index does not matter to a file."""
        del index
        self.live_handle()
        segment = PipelinedSegment(self, offset, self._storage.write_limit)
        self._segments.append(segment)
        return segment

    async def reopen(self, stale: Handle) -> None:
        """After a dropped connection: reconnect and open our part file again (once for all)."""
        async with self._reopen_lock:
            if self._handle is not stale:
                return  # a concurrent segment has reopened it already
            log.warning("SFTP connection dropped under writes in flight; reconnecting once",
                        location=self._location)
            self._handle = None
            await self._storage.drop_connection(self._client)
            self._client = await self._storage.client()
            try:
                self._handle = await self._client.open(self._part, READ_WRITE, encoding=None)
            except MISSING as error:
                raise self._discarded() from error
            except SFTP_FAILURES as error:
                raise await self._storage.classified(error, self._location) from error

    async def read_back(self, offset: int, size: int) -> bytes:
        """Bytes already written, read over the connection (a resumed upload's durable ones)."""
        handle = self.live_handle()

        async def read() -> bytes:
            return await read_blocks(self.live_handle(), size, offset)

        return await self._storage.twice(self._location, read, lambda: self.reopen(handle))

    def _discarded(self) -> PermanentStorageError:
        return PermanentStorageError(
            f"upload of {self._location} was discarded (a newer upload or a cleanup)"
        )

    async def commit(self, *, size: int, sha256: str) -> None:
        """Wait for every write, check the remote size, fsync, rename into place."""
        del sha256  # SFTP has nowhere to keep it; the manifest records it
        for segment in self._segments:
            await segment.close()
        handle = self.live_handle()
        written = await self._remote_size()
        if written != size:
            raise IntegrityError(
                f"{self._location}: {written} bytes on the server, expected {size}"
            )
        await self._storage.twice(
            self._location, lambda: self._storage.fsync(self.live_handle()),
            lambda: self.reopen(handle), writing=True,
        )
        await self._close_handle()
        client = await self._storage.client()
        try:
            await self._storage.rename_into_place(client, self._part, self._final)
        except MISSING as error:
            raise self._discarded() from error
        except SFTP_FAILURES as error:
            raise await self._storage.classified(error, self._location) from error
        self._end.end(committed=True)

    async def _remote_size(self) -> int:
        """Size of our part file by name; missing means a newer upload discarded it."""
        try:
            attrs = await self._storage.run(self._location, lambda c: c.stat(self._part))
        except FileNotFoundError as error:
            raise self._discarded() from error
        return attrs.size or 0

    async def _close_handle(self) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        # A dead handle holds nothing: the server closed it with the session.
        with contextlib.suppress(*SFTP_FAILURES):
            await handle.close()

    def durable(self) -> int:
        """Where the acknowledged bytes end, from the file's start without a gap."""
        end = self._durable
        for segment in sorted(self._segments, key=lambda each: each.offset):
            if segment.offset <= end:
                end = max(end, segment.acknowledged)
        return end

    async def suspend(self) -> None:
        """Keep only the acknowledged bytes, fsync, close; leave the file for resume_upload.

        The writes in flight are let finish first (they are ahead of the truncation in
        the server's queue anyway); a write that failed may have left a gap before
        others that landed, so the file is cut back to the end of what the server
        acknowledged without a gap: that, and only that, is what a resume trusts.
        """
        if self._end.ended or self._handle is None:
            return
        for segment in self._segments:
            segment.abandon()
        for segment in self._segments:
            await segment.settled()
        handle = self._handle
        with contextlib.suppress(*SFTP_FAILURES):
            await handle.truncate(self.durable())
            await self._storage.fsync(handle)
        await self._close_handle()
        self._end.end()  # finished for this object; the file stays

    async def abort(self) -> None:
        """Close and remove the part file. Idempotent; a no-op after a successful commit."""
        if self._end.ended:
            return
        for segment in self._segments:
            segment.abandon()  # writes in flight end on their own; nothing is sent again
        # Shielded: a cancelled transfer must still not leave its part behind.
        await asyncio.shield(self._remove_part())
        self._end.end()

    async def _remove_part(self) -> None:
        await self._close_handle()
        await self._storage.run(self._location, lambda c: remove_if_present(c, self._part))

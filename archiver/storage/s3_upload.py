"""A multipart upload to S3, streamed: how big files go up.

Big files go up as one multipart upload, streamed: a segment fills a buffer of
`part_size` bytes, hands it to a background UploadPart and starts the next
buffer, with at most `max_concurrent_part_uploads` parts in flight across all
uploads of the storage. Memory is therefore about `part_size * (in flight +
uploads open)`, plus at most 5 MiB per upload kept at a segment boundary (see
below). Nothing touches the local disk, and
the object appears under its key only when CompleteMultipartUpload succeeds.

Segments are laid out in *order*, with part numbers counted sequentially across
them. S3 refuses every part but the last under 5 MiB, so a segment's tail
cannot be a part of its own: a tail under 5 MiB is carried over into the first
part of the next segment (and kept until that segment closes, so a rewind can
restore it). A segment therefore waits (its first `write` or `close` blocks)
until every segment before it is closed. The transfer engine writes S3 segments
one after the other anyway (`supports_read_back` is False), so nobody waits.

A multipart upload of `key` is made under `<key>.part`, never under the final
key: completing it does not publish it. The sha256 is known only at the end, so
it cannot go on CreateMultipartUpload: on commit the completed `<key>.part` is
copied server side to `key` with the metadata (`x-amz-meta-sha256`), by
CopyObject up to 5 GiB and by a multipart UploadPartCopy above, then deleted.
Objects under 5 MiB are written with one PutObject that carries it. The
manifest, written last, records the sha256 as well.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import structlog

from archiver.core.errors import IntegrityError, PermanentStorageError, StorageError
from archiver.storage.base import UploadEnd
from archiver.storage.s3_bucket import MIN_PART_SIZE, S3Bucket
from archiver.storage.s3_copies import publish

log = structlog.get_logger(__name__)

MiB = 1024 * 1024
MAX_PARTS = 10_000


class PartBody(io.RawIOBase):
    """A part's buffer as a seekable stream, read without copying it whole.

    Handed raw bytes, aiohttp joins the whole part with the request headers and
    copies what the socket does not take into the transport buffer: three copies
    of every part in flight. As a stream it is sent in small reads.
    """

    def __init__(self, data: memoryview) -> None:
        super().__init__()
        self._view = data
        self._position = 0

    def readable(self) -> bool:
        """Always."""
        return True

    def seekable(self) -> bool:
        """Always: botocore rewinds the body to hash it and to retry."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Copy the next bytes into `buffer`."""
        piece = self._view[self._position : self._position + len(buffer)]
        buffer[: len(piece)] = piece
        self._position += len(piece)
        return len(piece)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move within the part."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}
        self._position = max(0, base[whence] + offset)
        return self._position

    def tell(self) -> int:
        """The read position."""
        return self._position

    def close(self) -> None:
        """Let go of the part's memory now: botocore and aiohttp keep the request (and
        so this body) in reference cycles that only the garbage collector breaks."""
        self._view = memoryview(b"")
        super().close()


class PartBuffer:
    """The part being filled: allocated once at full size, so it never grows by copying.

    (A growing bytearray over-allocates by an eighth and copies on resize.)
    """

    def __init__(self, capacity: int, initial: bytes = b"") -> None:
        self._capacity = capacity
        self._data: bytearray | None = None
        self.filled = 0
        self.fill(memoryview(initial))

    def fill(self, view: memoryview) -> int:
        """Copy as much of `view` as fits; return how many bytes were taken."""
        taken = min(len(view), self._capacity - self.filled)
        if taken:
            if self._data is None:
                self._data = bytearray(self._capacity)
            self._data[self.filled : self.filled + taken] = view[:taken]
            self.filled += taken
        return taken

    @property
    def full(self) -> bool:
        """True when it holds a whole part."""
        return self.filled >= self._capacity

    def contents(self) -> memoryview:
        """The bytes filled so far (a view: no copy)."""
        return memoryview(self._data or b"")[: self.filled]


class S3Segment:
    """One segment of an `S3Upload`: it takes its turn after every earlier segment."""

    def __init__(self, upload: S3Upload, index: int, offset: int) -> None:
        self.upload = upload
        self.index = index
        self.offset = offset
        self.started = False
        self.closed = False
        self.first_part = 0
        # The previous segment's tail (< 5 MiB) that heads our first part; kept for rewind.
        self.carry_in = b""

    async def write(self, chunk: bytes) -> None:
        """Append `chunk`; blocks while a part upload slot is busy (backpressure)."""
        await self.upload.append(self, chunk)

    async def rewind(self) -> None:
        """Forget this segment's buffered and uploaded parts; start again at its offset."""
        await self.upload.rewind_segment(self)

    async def close(self) -> None:
        """Finish the segment: the next one may start. Idempotent."""
        await self.upload.close_segment(self)


class S3Upload:
    """One multipart upload, filled segment after segment, completed on commit."""

    def __init__(self, storage: S3Bucket, key: str, object_key: str, upload_id: str) -> None:
        self._storage = storage
        self._key = key
        self._object_key = object_key
        self._upload_id = upload_id
        self._part_size = storage.part_size
        # Shared by every upload: memory is bounded per storage, not per backup.
        self._part_upload_limit = storage.part_upload_limit
        self._buffer = PartBuffer(self._part_size)
        self._position = 0  # bytes written by started segments, buffered or uploaded
        self._next_part = 1
        self._etags: dict[int, str] = {}
        self._in_flight: set[asyncio.Task[None]] = set()
        self._failure: StorageError | None = None
        self._closed_segments = 0
        self._current: S3Segment | None = None
        self._turn = asyncio.Condition()
        self._end = UploadEnd(storage.location(key))
        self._abort_task: asyncio.Future[None] | None = None
        # A resumed upload: its first bytes were copied from the sealed `<key>.part`
        # object, which `read_back` reads (its ETag guards against a newer one).
        self._sealed_etag: str | None = None

    @property
    def upload_id(self) -> str:
        """S3's id of this multipart upload."""
        return self._upload_id

    def resumed_from(self, durable: int, copied: dict[int, str], sealed_etag: str) -> None:
        """Start after `durable` bytes already in parts `copied` (number -> ETag)."""
        self._position = durable
        self._etags = dict(copied)
        self._next_part = max(copied, default=0) + 1
        self._sealed_etag = sealed_etag
        self._closed_segments = -1  # the first segment opened after resuming takes its turn

    def _check_usable(self) -> None:
        self._end.check_open()
        if self._failure is not None:
            raise self._failure

    def _where(self) -> str:
        return self._storage.location(self._key)

    async def open_segment(self, index: int, offset: int) -> S3Segment:
        """A writer for segment `index`; it writes once segments 0..index-1 are closed."""
        self._check_usable()
        if offset < 0 or index < 0:
            raise ValueError(f"segment index and offset must be >= 0, not {index}, {offset}")
        if self._closed_segments < 0:  # resumed: this segment continues the copied bytes
            self._closed_segments = index
        return S3Segment(self, index, offset)

    async def read_back(self, offset: int, size: int) -> bytes:
        """The bytes a resumed upload copied (parts in flight cannot be read on S3)."""
        if self._sealed_etag is None or offset + size > self._position:
            raise PermanentStorageError("S3 uploads can only read back a resumed upload's start")
        response = await self._storage.call(
            "get_object", f"{self._where()} (read back)", Key=self._object_key,
            Range=f"bytes={offset}-{offset + size - 1}", IfMatch=self._sealed_etag,
        )
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    async def _begin(self, segment: S3Segment) -> None:
        """Wait for `segment`'s turn, then make it the current one."""
        if segment.started:
            self._check_usable()
            return
        async with self._turn:
            await self._turn.wait_for(
                lambda: self._end.ended or self._closed_segments >= segment.index
            )
        self._check_usable()
        if self._closed_segments != segment.index or self._position != segment.offset:
            raise PermanentStorageError(
                f"segment {segment.index} of {self._where()} at byte {segment.offset} does not "
                f"follow the {self._closed_segments} closed segments ({self._position} bytes)"
            )
        segment.started = True
        segment.first_part = self._next_part
        segment.carry_in = bytes(self._buffer.contents())
        self._current = segment

    async def append(self, segment: S3Segment, chunk: bytes) -> None:
        """Buffer `chunk`; each full buffer becomes a part uploaded in the background."""
        await self._begin(segment)
        if segment.closed:
            raise PermanentStorageError(f"segment {segment.index} of {self._where()} is closed")
        view = memoryview(chunk)
        while view:
            taken = self._buffer.fill(view)
            self._position += taken
            view = view[taken:]
            if self._buffer.full:
                await self._send_buffer()

    async def close_segment(self, segment: S3Segment) -> None:
        """Upload the tail if S3 would take it as a part; else carry it to the next segment."""
        if segment.closed:
            return
        await self._begin(segment)
        if self._buffer.filled >= MIN_PART_SIZE:
            await self._send_buffer()
        segment.closed = True
        self._current = None
        async with self._turn:
            self._closed_segments += 1
            self._turn.notify_all()

    async def rewind_segment(self, segment: S3Segment) -> None:
        """Drop the segment's parts (they are left out of, or overwritten before, completion)."""
        if not segment.started:
            return
        if segment.closed:
            raise PermanentStorageError(f"segment {segment.index} is closed: cannot rewind")
        await self._drain()
        self._check_usable()
        for number in [n for n in self._etags if n >= segment.first_part]:
            del self._etags[number]
        self._next_part = segment.first_part
        self._buffer = PartBuffer(self._part_size, segment.carry_in)
        self._position = segment.offset

    async def _send_buffer(self) -> None:
        """Start uploading the buffer as the next part, once a slot is free."""
        data, self._buffer = self._buffer.contents(), PartBuffer(self._part_size)
        number = self._next_part
        if number > MAX_PARTS:
            raise PermanentStorageError(
                f"{self._where()} needs more than {MAX_PARTS} parts: raise part_size"
            )
        self._next_part += 1
        await self._part_upload_limit.acquire()
        task = asyncio.create_task(self._upload_part(number, data))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        # Released when the task ends in any way, even cancelled before it ran.
        task.add_done_callback(lambda _: self._part_upload_limit.release())
        self._check_usable()

    async def _upload_part(self, number: int, data: memoryview) -> None:
        body = PartBody(data)
        del data  # from here only `body` holds the part, and it lets go when closed
        try:
            response = await self._storage.call(
                "upload_part", self._where(), Key=self._object_key, UploadId=self._upload_id,
                PartNumber=number, Body=body,
            )
            self._etags[number] = str(response["ETag"])
        except StorageError as error:
            self._failure = self._failure or error
        finally:
            body.close()

    async def _drain(self) -> None:
        """Wait for every part upload in flight."""
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def commit(self, *, size: int, sha256: str) -> None:
        """Check the size, upload the last part, complete, and attach the sha256."""
        self._check_usable()
        if self._current is not None:
            raise PermanentStorageError(f"segment {self._current.index} is still open")
        if self._position != size:
            raise IntegrityError(
                f"upload of {self._where()} holds {self._position} bytes, expected {size}"
            )
        if not self._etags and not self._in_flight and self._next_part == 1:
            await self._put_whole(sha256)
            return
        if self._buffer.filled:
            await self._send_buffer()
        await self._drain()
        self._check_usable()
        completed = await self._complete()
        self._mark_committed()
        await publish(self._storage, self._key, size, sha256, str(completed["ETag"]))

    async def _put_whole(self, sha256: str) -> None:
        """Under 5 MiB all of it is still buffered: one PutObject with the metadata.

        First make sure our multipart upload still exists: a newer `start_upload` of
        the key aborts it, and then this older upload must not publish.
        """
        await self._storage.call(
            "list_parts", self._where(), Key=self._object_key, UploadId=self._upload_id,
            MaxParts=1,
        )
        await self._storage.put(self._key, bytes(self._buffer.contents()), sha256=sha256)
        self._mark_committed()
        try:
            await self._storage.abort_multipart(self._object_key, self._upload_id)
        except StorageError as error:  # the object is safe; the next pass cleans up
            log.warning("could not abort an emptied multipart upload", error=str(error))

    async def _complete(self) -> dict[str, Any]:
        parts = [{"PartNumber": n, "ETag": self._etags[n]} for n in sorted(self._etags)]
        return await self._storage.call(
            "complete_multipart_upload", self._where(), Key=self._object_key,
            UploadId=self._upload_id, MultipartUpload={"Parts": parts},
        )

    def _mark_committed(self) -> None:
        self._end.end(committed=True)
        self._finish()

    def _finish(self) -> None:
        self._end.end()
        self._buffer = PartBuffer(self._part_size)
        self._current = None
        # Wake segments waiting for their turn: they find the upload finished and raise.
        self._storage.spawn(self._wake_waiters())

    async def _wake_waiters(self) -> None:
        async with self._turn:
            self._turn.notify_all()

    async def suspend(self) -> None:
        """Let the parts in flight finish, then leave the multipart upload for resume_upload."""
        if self._end.ended:
            return
        await asyncio.shield(self._drain())
        self._finish()

    async def abort(self) -> None:
        """Abort the multipart upload. Idempotent, a no-op after commit.

        The work runs in its own task and is shielded: cancelling the caller (a
        SIGTERM, a failed sibling download) does not stop the abort half way.
        """
        if self._end.committed:
            return
        if self._abort_task is None:
            self._abort_task = self._storage.spawn(self._abort_now())
        await asyncio.shield(self._abort_task)

    async def _abort_now(self) -> None:
        self._finish()
        for task in self._in_flight:
            task.cancel()
        await self._drain()
        await self._storage.abort_multipart(self._object_key, self._upload_id)
        if self._sealed_etag is not None:  # resumed: the sealed start goes too
            await self._storage.remove_object(self._object_key, f"{self._where()} (sealed)")

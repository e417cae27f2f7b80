"""An S3 bucket (AWS or any S3-compatible service) as archive storage.

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
from collections.abc import AsyncIterator, Collection
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from archiver.config import S3StorageSettings
from archiver.errors import (
    ConfigError,
    IntegrityError,
    PermanentStorageError,
    StorageError,
    TransientStorageError,
)
from archiver.retry import Backoff, RetryPolicy, retrying
from archiver.storage.base import (
    PART_SUFFIX,
    READ_CHUNK_SIZE,
    ObjectInfo,
    ResumedUpload,
    check_final_key,
    check_key,
    probe_round_trip,
)

log = structlog.get_logger(__name__)

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's floor for every part but the last
MAX_PARTS = 10_000
MAX_COPY_OBJECT_SIZE = 5 * 1024 * MiB  # CopyObject's ceiling; above it, multipart copy
COPY_PART_SIZE = 1024 * MiB
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_NO_UPLOAD = {"404", "NoSuchUpload"}
_TRANSIENT_CODES = {
    "SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling",
    "ThrottlingException", "RequestTimeTooSkewed", "OperationAborted", "503", "500",
}
_HINTS = {
    "InvalidAccessKeyId": "credentials rejected: unknown access key id",
    "SignatureDoesNotMatch": "credentials rejected: the secret key does not match",
    "AccessDenied": "access denied: check the credentials' permissions on the bucket",
    "403": "access denied (HTTP 403): check the credentials and their permissions",
    "NoSuchBucket": "the bucket does not exist",
    "EntityTooLarge": "the object is larger than the service accepts",
}


# An abort is confirmed with ListParts, and repeated while the upload is still listed.
_ABORT_POLICY = RetryPolicy(retries=2, backoff=Backoff(base=0.2, cap=1.0))


class _StillListed(Exception):
    """The multipart upload is still listed after an abort."""


def _error_code(error: ClientError) -> str:
    """The S3 error code ('NoSuchKey'), or the HTTP status for bodiless answers (HEAD)."""
    return str(error.response.get("Error", {}).get("Code", "")) or str(
        error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )


def caused_by(error: StorageError, codes: set[str]) -> bool:
    """True when `error` wraps an S3 answer with one of `codes`."""
    cause = error.__cause__
    return isinstance(cause, ClientError) and _error_code(cause) in codes


def classify_s3_error(error: Exception, what: str) -> StorageError:
    """Class a botocore error: network, 5xx and throttling are transient, refusals permanent.

    The message names the operation and the bucket/key (`what`), never credentials.
    """
    if isinstance(error, ClientError):
        code = _error_code(error)
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        detail = _HINTS.get(code, code)
        if status >= 500 or code in _TRANSIENT_CODES:
            return TransientStorageError(f"S3 error on {what}: {detail} (HTTP {status})")
        return PermanentStorageError(f"S3 refused {what}: {detail}")
    if isinstance(error, NoCredentialsError):
        return PermanentStorageError(f"S3 {what}: no credentials found (environment or config)")
    # Connection refused, DNS failure, timeouts: botocore already retried them.
    return TransientStorageError(f"S3 {what}: endpoint unreachable ({type(error).__name__})")


def normalised_prefix(prefix: str) -> str:
    """'' or a folder-like prefix ending in '/' (so 'backups' means 'backups/...')."""
    trimmed = prefix.strip("/")
    return f"{check_key(trimmed)}/" if trimmed else ""


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

    def __init__(self, storage: S3Storage, key: str, object_key: str, upload_id: str) -> None:
        self._storage = storage
        self._key = key
        self._object_key = object_key
        self._upload_id = upload_id
        self._part_size = storage.settings.part_size
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
        self._finished = False
        self._committed = False
        self._abort_task: asyncio.Future[None] | None = None
        # A resumed upload: its first bytes were copied from the sealed `<key>.part`
        # object, which `read_back` reads (its ETag guards against a newer one).
        self._sealed_etag: str | None = None

    def resumed_from(self, durable: int, copied: dict[int, str], sealed_etag: str) -> None:
        """Start after `durable` bytes already in parts `copied` (number -> ETag)."""
        self._position = durable
        self._etags = dict(copied)
        self._next_part = max(copied, default=0) + 1
        self._sealed_etag = sealed_etag
        self._closed_segments = -1  # the first segment opened after resuming takes its turn

    def _check_usable(self) -> None:
        if self._finished:
            raise PermanentStorageError(f"upload of {self._where()} is finished or was aborted")
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
                lambda: self._finished or self._closed_segments >= segment.index
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
        await self._storage.publish(self._key, size, sha256, str(completed["ETag"]))

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
        self._committed = True
        self._finish()

    def _finish(self) -> None:
        self._finished = True
        self._buffer = PartBuffer(self._part_size)
        self._current = None
        # Wake segments waiting for their turn: they find the upload finished and raise.
        self._storage.spawn(self._wake_waiters())

    async def _wake_waiters(self) -> None:
        async with self._turn:
            self._turn.notify_all()

    async def suspend(self) -> None:
        """Let the parts in flight finish, then leave the multipart upload for resume_upload."""
        if self._committed or self._finished:
            return
        await asyncio.shield(self._drain())
        self._finish()

    async def abort(self) -> None:
        """Abort the multipart upload. Idempotent, a no-op after commit.

        The work runs in its own task and is shielded: cancelling the caller (a
        SIGTERM, a failed sibling download) does not stop the abort half way.
        """
        if self._committed:
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
            await self._storage.call(
                "delete_object", f"{self._where()} (sealed)", Key=self._object_key
            )


class S3Storage:
    """The Storage protocol on an S3 bucket (see `archiver.storage.base` and this module)."""

    supports_read_back = False

    def __init__(self, settings: S3StorageSettings) -> None:
        self.settings = settings
        self._bucket = settings.bucket
        self._prefix = normalised_prefix(settings.prefix)
        self._secret = self._read_secret(settings.secret_access_key_file)
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._client_lock = asyncio.Lock()
        self._background: set[asyncio.Future[None]] = set()
        # Part uploads in flight across all uploads of this storage.
        self.part_upload_limit = asyncio.Semaphore(settings.max_concurrent_part_uploads)

    @staticmethod
    def _read_secret(path: Path | None) -> str | None:
        if path is None:
            return None
        try:
            return path.read_text().strip()
        except OSError as error:
            raise ConfigError(
                f"storage.secret_access_key_file {path}: cannot read ({error.strerror})"
            ) from None

    def _config(self) -> AioConfig:
        concurrency = self.settings.max_concurrent_part_uploads
        return AioConfig(
            # SigV4 everywhere, pre-signed URLs included (botocore would sign those with
            # the deprecated SigV2 in us-east-1).
            signature_version="s3v4",
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=15,
            read_timeout=120,
            max_pool_connections=max(10, 2 * concurrency),
            s3={"addressing_style": self.settings.addressing_style},
            # New botocore sends CRC checksums by default; several S3-compatible
            # services reject them. Send and check them only where S3 requires it.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )

    async def _connected(self) -> Any:
        """The aiobotocore client, created on first use (it needs the running loop)."""
        async with self._client_lock:
            if self._client is None:
                credentials: dict[str, str] = {}
                if self.settings.access_key_id and self._secret is not None:
                    credentials = {
                        "aws_access_key_id": self.settings.access_key_id,
                        "aws_secret_access_key": self._secret,
                    }
                # S3-compatible services often ignore the region but SigV4 needs one.
                default_region = "us-east-1" if self.settings.endpoint_url else None
                region = self.settings.region or default_region
                self._client = await self._stack.enter_async_context(
                    get_session().create_client(
                        "s3", region_name=region, endpoint_url=self.settings.endpoint_url,
                        config=self._config(), **credentials,
                    )
                )
            return self._client

    async def call(self, operation: str, what: str, **params: Any) -> dict[str, Any]:
        """Run one S3 operation on our bucket; botocore errors become StorageErrors."""
        client = await self._connected()
        try:
            response: dict[str, Any] = await getattr(client, operation)(
                Bucket=self._bucket, **params
            )
        except (ClientError, BotoCoreError) as error:
            raise classify_s3_error(error, what) from error
        return response

    def spawn(self, work: Any) -> asyncio.Future[None]:
        """Run `work` in a task that `aclose` waits for (aborts must not be lost)."""
        task: asyncio.Future[None] = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _object_key(self, key: str) -> str:
        return self._prefix + check_final_key(key)

    def _upload_key(self, key: str) -> str:
        """Where an unfinished upload of `key` lives: never under the final key."""
        return self._object_key(key) + PART_SUFFIX

    def location(self, key: str) -> str:
        """`s3://<bucket>/<prefix><key>`."""
        return f"s3://{self._bucket}/{self._object_key(key)}"

    def _write_options(self, sha256: str | None = None) -> dict[str, Any]:
        """Storage class, encryption and metadata for objects we create."""
        options: dict[str, Any] = {}
        if self.settings.storage_class:
            options["StorageClass"] = self.settings.storage_class
        if self.settings.server_side_encryption:
            options["ServerSideEncryption"] = self.settings.server_side_encryption
        if self.settings.sse_kms_key_id:
            options["SSEKMSKeyId"] = self.settings.sse_kms_key_id
        if sha256 is not None:
            options["Metadata"] = {"sha256": sha256}
        return options

    async def start_upload(self, key: str) -> S3Upload:
        """Abort unfinished uploads of `key`, then create a fresh multipart upload."""
        upload_key = self._upload_key(key)
        for stale_key, upload_id in await self._multipart_uploads(upload_key):
            if stale_key == upload_key:
                await self.abort_multipart(stale_key, upload_id)
        response = await self.call(
            "create_multipart_upload", self.location(key), Key=upload_key, **self._write_options()
        )
        return S3Upload(self, key, upload_key, str(response["UploadId"]))

    async def resume_upload(self, key: str) -> ResumedUpload | None:
        """Continue an unfinished upload of `key` from its completed parts (ListParts).

        S3 cannot read the parts of an unfinished upload, and the caller must hash
        the durable bytes again: so the parts that follow each other from part 1 are
        completed into the `<key>.part` object (not the final key: nothing is
        published), and a new multipart upload starts with those bytes copied from
        it server side (UploadPartCopy), readable through `read_back` until commit.
        """
        upload_key = self._upload_key(key)
        sealed = await self._seal_durable_parts(upload_key)
        if sealed is None:
            return None
        size, etag = sealed
        created = await self.call(
            "create_multipart_upload", self.location(key), Key=upload_key, **self._write_options()
        )
        upload = S3Upload(self, key, upload_key, str(created["UploadId"]))
        try:
            copied = await self._copy_into(upload_key, str(created["UploadId"]), size, etag)
        except BaseException:
            await asyncio.shield(self.spawn(upload.abort()))
            raise
        upload.resumed_from(size, copied, etag)
        return ResumedUpload(upload, size)

    async def _seal_durable_parts(self, upload_key: str) -> tuple[int, str] | None:
        """(size, ETag) of `<key>.part` holding the durable parts; None when nothing is."""
        uploads = [u for u in await self._multipart_uploads(upload_key) if u[0] == upload_key]
        for key, upload_id in uploads[:-1]:  # an older attempt's: the newest one counts
            await self.abort_multipart(key, upload_id)
        if uploads:
            _, upload_id = uploads[-1]
            parts = await self._contiguous_parts(upload_key, upload_id)
            if not parts:
                await self.abort_multipart(upload_key, upload_id)
                return None
            await self.call(
                "complete_multipart_upload", f"s3://{self._bucket}/{upload_key} (seal)",
                Key=upload_key, UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e, _ in parts]},
            )
        return await self._sealed_object(upload_key)

    async def _contiguous_parts(
        self, upload_key: str, upload_id: str
    ) -> list[tuple[int, str, int]]:
        """(number, ETag, size) of the completed parts that follow each other from part 1."""
        client = await self._connected()
        paginator = client.get_paginator("list_parts")
        found: list[tuple[int, str, int]] = []
        try:
            async for page in paginator.paginate(
                Bucket=self._bucket, Key=upload_key, UploadId=upload_id
            ):
                found.extend(
                    (int(p["PartNumber"]), str(p["ETag"]), int(p["Size"]))
                    for p in page.get("Parts", [])
                )
        except (ClientError, BotoCoreError) as error:
            raise classify_s3_error(error, f"s3://{self._bucket}/{upload_key} (parts)") from error
        contiguous = []
        for expected, part in enumerate(sorted(found), start=1):
            if part[0] != expected:
                break
            contiguous.append(part)
        return contiguous

    async def _sealed_object(self, upload_key: str) -> tuple[int, str] | None:
        try:
            head = await self.call("head_object", f"s3://{self._bucket}/{upload_key}",
                                   Key=upload_key)
        except PermanentStorageError as error:
            if caused_by(error, _NOT_FOUND):
                return None
            raise
        size = int(head["ContentLength"])
        return (size, str(head["ETag"])) if size >= MIN_PART_SIZE else None

    async def _copy_into(
        self, upload_key: str, upload_id: str, size: int, etag: str
    ) -> dict[int, str]:
        """UploadPartCopy of the sealed object into the new upload, in ranges of 5 MiB+."""
        count = -(-size // COPY_PART_SIZE)
        bounds = [size * n // count for n in range(count + 1)]  # even: each >= 5 MiB
        copied: dict[int, str] = {}
        for number in range(1, count + 1):
            start, end = bounds[number - 1], bounds[number] - 1
            answer = await self.call(
                "upload_part_copy", f"s3://{self._bucket}/{upload_key} (resume)",
                Key=upload_key, UploadId=upload_id, PartNumber=number,
                CopySource={"Bucket": self._bucket, "Key": upload_key},
                CopySourceRange=f"bytes={start}-{end}", CopySourceIfMatch=etag,
            )
            copied[number] = str(answer["CopyPartResult"]["ETag"])
        return copied

    async def abort_multipart(self, object_key: str, upload_id: str) -> None:
        """Abort an upload; one already gone is fine. Checks it is gone (AWS may keep
        parts that were still uploading during the abort: then it aborts again)."""
        what = f"s3://{self._bucket}/{object_key} (upload abort)"

        async def abort_and_confirm() -> None:
            try:
                await self.call("abort_multipart_upload", what, Key=object_key, UploadId=upload_id)
                await self.call("list_parts", what, Key=object_key, UploadId=upload_id)
            except PermanentStorageError as error:
                if caused_by(error, _NO_UPLOAD):
                    return  # gone, as it should be
                raise
            raise _StillListed(what)

        try:
            await retrying(abort_and_confirm, policy=_ABORT_POLICY, retry_on=(_StillListed,))
        except _StillListed:
            log.warning("multipart upload still listed after abort", location=what)

    async def _multipart_uploads(self, object_prefix: str) -> list[tuple[str, str]]:
        """(key, upload id) of every unfinished multipart upload under `object_prefix`."""
        found: list[tuple[str, str]] = []
        client = await self._connected()
        paginator = client.get_paginator("list_multipart_uploads")
        try:
            async for page in paginator.paginate(Bucket=self._bucket, Prefix=object_prefix):
                found.extend((item["Key"], item["UploadId"]) for item in page.get("Uploads", []))
        except (ClientError, BotoCoreError) as error:
            what = f"s3://{self._bucket}/{object_prefix} (list uploads)"
            raise classify_s3_error(error, what) from error
        return found

    async def put(self, key: str, data: bytes, *, sha256: str | None = None) -> None:
        """One PutObject: atomic on S3 (readers see the old or the new object)."""
        await self.call(
            "put_object", self.location(key), Key=self._object_key(key), Body=data,
            **self._write_options(sha256),
        )

    async def publish(self, key: str, size: int, sha256: str, etag: str) -> None:
        """Copy the completed `<key>.part` to `key` with `x-amz-meta-sha256`, then delete it.

        A server-side copy: the final key appears whole, at once, with its metadata.
        A crash after the copy leaves only the `.part` object, which the next
        cleanup removes.
        """
        if size <= MAX_COPY_OBJECT_SIZE:
            await self.call(
                "copy_object", f"{self.location(key)} (publish)", Key=self._object_key(key),
                CopySource={"Bucket": self._bucket, "Key": self._upload_key(key)},
                CopySourceIfMatch=etag, MetadataDirective="REPLACE",
                **self._write_options(sha256),
            )
        else:
            await self._copy_in_parts(key, size, sha256, etag)
        await self.call(
            "delete_object", f"{self.location(key)} (upload)", Key=self._upload_key(key)
        )

    async def _copy_in_parts(self, key: str, size: int, sha256: str, etag: str) -> None:
        """Above 5 GiB CopyObject is refused: a multipart copy instead."""
        object_key = self._object_key(key)
        source = {"Bucket": self._bucket, "Key": self._upload_key(key)}
        what = f"{self.location(key)} (publish)"
        created = await self.call(
            "create_multipart_upload", what, Key=object_key, **self._write_options(sha256)
        )
        upload_id = str(created["UploadId"])
        try:
            parts = []
            for number, start in enumerate(range(0, size, COPY_PART_SIZE), start=1):
                end = min(start + COPY_PART_SIZE, size) - 1
                copied = await self.call(
                    "upload_part_copy", what, Key=object_key, UploadId=upload_id,
                    PartNumber=number, CopySourceRange=f"bytes={start}-{end}",
                    CopySource=source, CopySourceIfMatch=etag,
                )
                parts.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
            await self.call(
                "complete_multipart_upload", what, Key=object_key, UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            await asyncio.shield(self.spawn(self.abort_multipart(object_key, upload_id)))
            raise

    async def write_small(self, key: str, data: bytes) -> None:
        """PutObject: replaces the old object atomically."""
        await self.put(key, data)

    async def read_small(self, key: str) -> bytes:
        """GetObject whole; FileNotFoundError when there is no such key."""
        response = await self._get_object(key)
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    async def read_chunks(
        self, key: str, *, chunk_size: int = READ_CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        """GetObject, streamed; FileNotFoundError when there is no such key."""
        response = await self._get_object(key)
        pending = bytearray()
        async with response["Body"] as body:
            try:
                async for piece in body.iter_chunks(chunk_size):
                    pending += piece
                    while len(pending) >= chunk_size:  # whole chunks, as the protocol says
                        yield bytes(pending[:chunk_size])
                        del pending[:chunk_size]
            except (TimeoutError, ClientError, BotoCoreError, OSError) as error:
                raise classify_s3_error(error, f"{self.location(key)} (read)") from error
        if pending:
            yield bytes(pending)

    async def _get_object(self, key: str) -> dict[str, Any]:
        try:
            return await self.call("get_object", self.location(key), Key=self._object_key(key))
        except PermanentStorageError as error:
            if caused_by(error, _NOT_FOUND):
                raise FileNotFoundError(self.location(key)) from None
            raise

    async def stat(self, key: str) -> ObjectInfo | None:
        """HeadObject: the size of a completed object, or None."""
        object_key = self._object_key(key)
        try:
            response = await self.call("head_object", self.location(key), Key=object_key)
        except PermanentStorageError as error:
            if caused_by(error, _NOT_FOUND):
                return None
            raise
        return ObjectInfo(key=key, size=int(response["ContentLength"]))

    async def list(self, prefix: str = "") -> AsyncIterator[str]:
        """ListObjectsV2, paginated: keys under the folder `prefix`, relative to ours."""
        trimmed = prefix.strip("/")
        start = self._prefix + (f"{check_key(trimmed)}/" if trimmed else "")
        client = await self._connected()
        paginator = client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(Bucket=self._bucket, Prefix=start):
                for item in page.get("Contents", []):
                    key = str(item["Key"])[len(self._prefix) :]
                    if not key.endswith(PART_SUFFIX):  # a finished upload not yet published
                        yield key
        except (ClientError, BotoCoreError) as error:
            raise classify_s3_error(error, f"s3://{self._bucket}/{start} (list)") from error

    async def shareable_url(self, key: str, expires: timedelta) -> str | None:
        """A pre-signed GET URL of the object, valid for `expires` (SigV4 allows 7 days)."""
        client = await self._connected()
        url: str = await client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self._bucket, "Key": self._object_key(key)},
            ExpiresIn=int(expires.total_seconds()),
        )
        return url

    async def remove(self, key: str) -> None:
        """DeleteObject; S3 answers a missing key with success too."""
        await self.call("delete_object", self.location(key), Key=self._object_key(key))

    async def remove_incomplete(self, keep: Collection[str] = ()) -> int:
        """Abort every unfinished multipart upload under our prefix (and delete every
        unpublished `.part` object) but those of keys in `keep`; return how many.

        A pass runs alone under the state lock, so every upload under the prefix
        is a leftover of an interrupted one (ours or a crashed process's).
        """
        kept = {self._upload_key(key) for key in keep}
        uploads = [u for u in await self._multipart_uploads(self._prefix) if u[0] not in kept]
        for object_key, upload_id in uploads:
            await self.abort_multipart(object_key, upload_id)
        leftovers = [key async for key in self._part_objects() if key not in kept]
        for object_key in leftovers:  # completed, but never published (a crash in between)
            await self.call("delete_object", f"s3://{self._bucket}/{object_key}", Key=object_key)
        return len(uploads) + len(leftovers)

    async def _part_objects(self) -> AsyncIterator[str]:
        """Object keys under our prefix that end in `.part`: unpublished uploads."""
        client = await self._connected()
        paginator = client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(Bucket=self._bucket, Prefix=self._prefix):
                for item in page.get("Contents", []):
                    if str(item["Key"]).endswith(PART_SUFFIX):
                        yield str(item["Key"])
        except (ClientError, BotoCoreError) as error:
            raise classify_s3_error(error, f"s3://{self._bucket}/{self._prefix} (list)") from error

    async def probe(self) -> None:
        """Put, get and delete a probe object; the error names what failed."""
        where = f"bucket {self._bucket} at {self.settings.endpoint_url or 'AWS'}"
        await probe_round_trip(self, where)

    async def aclose(self) -> None:
        """Let aborts in flight finish, then close the client's connections."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._stack.aclose()
        self._client = None

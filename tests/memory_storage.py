"""The in-memory reference backend (tests only): the Storage contract with nothing else in the way.

The conformance suite runs against it first; tests of code above storage can
use it when the disk is beside the point. Everything lives in dicts and is lost
when the object goes away.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Collection
from datetime import UTC, datetime, timedelta

from archiver.core.errors import IntegrityError, PermanentStorageError
from archiver.storage.base import (
    LEFTOVER_IDLE,
    READ_CHUNK_SIZE,
    ObjectInfo,
    OffsetSegment,
    ResumedUpload,
    UploadEnd,
    check_key,
    probe_round_trip,
    removable_leftover,
)


class MemoryUpload:
    """Bytes assembled in a buffer, copied into the store on commit."""

    def __init__(self, storage: MemoryStorage, key: str) -> None:
        self._storage = storage
        self._key = key
        self._buffer = bytearray()
        self._end = UploadEnd(repr(key))
        self.last_written = datetime.now(UTC)

    @property
    def written(self) -> bytes:
        """The bytes written so far (a copy)."""
        return bytes(self._buffer)

    def adopt(self, earlier: MemoryUpload) -> None:
        """Continue where `earlier` (suspended or abandoned) stopped."""
        self._buffer = bytearray(earlier.written)

    @property
    def active(self) -> bool:
        """True until commit, abort or a newer upload of the same key."""
        return not self._end.ended and self._storage.pending_upload(self._key) is self

    def _check_active(self) -> None:
        self._end.check_open()
        if self._storage.pending_upload(self._key) is not self:
            raise PermanentStorageError(f"upload of {self._key!r} was discarded (a newer upload)")

    async def open_segment(self, index: int, offset: int) -> OffsetSegment:
        """A writer at `offset`."""
        del index
        self._check_active()
        return OffsetSegment(self, offset)

    async def write_at(self, chunk: bytes, offset: int) -> None:
        """Write at `offset`, filling any gap with zeros as a sparse file would."""
        self._check_active()
        end = offset + len(chunk)
        if end > len(self._buffer):
            self._buffer.extend(bytes(end - len(self._buffer)))
        self._buffer[offset:end] = chunk
        self.last_written = datetime.now(UTC)

    async def read_back(self, offset: int, size: int) -> bytes:
        """Bytes already written."""
        self._check_active()
        return bytes(self._buffer[offset : offset + size])

    async def commit(self, *, size: int, sha256: str) -> None:
        """Check the size and publish the bytes under the key."""
        self._check_active()
        if len(self._buffer) != size:
            raise IntegrityError(
                f"upload of {self._key!r} holds {len(self._buffer)} bytes, expected {size}"
            )
        self._storage.publish(self._key, bytes(self._buffer), sha256)
        self._finish()

    async def suspend(self) -> None:
        """Keep the buffer in the store for `resume_upload`; this object is done."""
        self._end.end()

    async def abort(self) -> None:
        """Forget the buffer. Idempotent; a no-op after commit."""
        if self.active:
            self._storage.forget_upload(self._key)
        self._finish()

    def _finish(self) -> None:
        self._end.end()
        self._buffer = bytearray()


class MemoryStorage:
    """The Storage protocol in a dict (see `archiver.storage.base`)."""

    supports_read_back = True

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._sha256: dict[str, str] = {}
        self._uploads: dict[str, MemoryUpload] = {}

    def pending_upload(self, key: str) -> MemoryUpload | None:
        """The unfinished upload of `key`, if any."""
        return self._uploads.get(key)

    def publish(self, key: str, data: bytes, sha256: str) -> None:
        """Make a committed upload visible (called by `MemoryUpload.commit`)."""
        self._uploads.pop(key, None)
        self._objects[key] = data
        self._sha256[key] = sha256

    def forget_upload(self, key: str) -> None:
        """Drop the unfinished upload of `key`."""
        self._uploads.pop(key, None)

    def sha256_of(self, key: str) -> str | None:
        """The sha256 given at commit, for tests (None for small objects)."""
        return self._sha256.get(key)

    def location(self, key: str) -> str:
        """`memory://<key>`."""
        return f"memory://{check_key(key)}"

    async def start_upload(self, key: str) -> MemoryUpload:
        """Begin `key`, replacing (and so discarding) any unfinished upload of it."""
        upload = MemoryUpload(self, check_key(key))
        self._uploads[key] = upload
        return upload

    async def resume_upload(self, key: str) -> ResumedUpload | None:
        """The suspended (or abandoned) upload of `key`, as a new upload over its bytes."""
        old = self._uploads.get(check_key(key))
        if old is None or not old.written:
            return None
        upload = MemoryUpload(self, key)
        upload.adopt(old)
        self._uploads[key] = upload
        return ResumedUpload(upload, len(upload.written))

    async def write_small(self, key: str, data: bytes) -> None:
        """Replace the object at once."""
        self._objects[check_key(key)] = bytes(data)
        self._sha256.pop(key, None)

    async def read_small(self, key: str) -> bytes:
        """The whole object; FileNotFoundError when missing."""
        try:
            return self._objects[check_key(key)]
        except KeyError:
            raise FileNotFoundError(key) from None

    async def read_chunks(
        self, key: str, *, chunk_size: int = READ_CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]:
        """The object in chunks; FileNotFoundError when missing."""
        data = await self.read_small(key)
        for start in range(0, len(data), chunk_size):
            yield data[start : start + chunk_size]

    async def stat(self, key: str) -> ObjectInfo | None:
        """Size of a completed object, or None."""
        data = self._objects.get(check_key(key))
        return None if data is None else ObjectInfo(key=key, size=len(data))

    async def list(self, prefix: str = "") -> AsyncIterator[str]:
        """Completed keys under the folder `prefix`, sorted."""
        trimmed = prefix.strip("/")
        start = f"{check_key(trimmed)}/" if trimmed else ""
        for key in sorted(self._objects):
            if key.startswith(start):
                yield key

    async def shareable_url(self, key: str, expires: timedelta) -> str | None:
        """None: this backend has no URL that Cloud 66 could fetch an object from."""
        del key, expires
        return None

    async def remove(self, key: str) -> None:
        """Delete; a missing key is fine."""
        self._objects.pop(check_key(key), None)
        self._sha256.pop(key, None)

    async def remove_incomplete(
        self, keep: Collection[str] = (), *, idle_for: timedelta = LEFTOVER_IDLE
    ) -> int:
        """Drop every unfinished upload but those of keys in `keep` and another process's
        probe or staging copy until idle for `idle_for`; return how many."""
        doomed = [
            key for key, upload in self._uploads.items()
            if key not in keep and removable_leftover(key, upload.last_written, idle_for=idle_for)
        ]
        for key in doomed:
            del self._uploads[key]
        return len(doomed)

    async def probe(self) -> None:
        """Write, read back and delete a probe object."""
        await probe_round_trip(self, "memory storage")

    async def aclose(self) -> None:
        """Nothing to release."""

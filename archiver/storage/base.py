"""The Storage protocol: what every backend (local, S3, SFTP, memory) promises.

Keys are relative, '/'-separated, and already sanitised by `archiver.model.layout`;
a backend still refuses any key that could escape its root (`check_key`).

Big files are written through an `Upload`: the data is invisible under its
final key until `commit`, and `abort` removes every trace. An upload is made of
*segments* (the pieces of a multi-part Cloud 66 backup), each written
sequentially from its own offset; segments may be written concurrently.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from archiver.core.errors import PermanentStorageError, StorageError

# How much a streamed read hands over at a time: big enough that per-chunk overhead
# vanishes next to hashing, small enough that memory stays flat.
READ_CHUNK_SIZE = 4 * 1024 * 1024

# Unfinished data lives under this suffix (local and SFTP); no final key may end with it.
PART_SUFFIX = ".part"

PROBE_PREFIX = "c66-archiver-probe-"
"""The name of a probe object at the root (`probe`, as `check-config` and /readyz run it)."""

STAGING_FOLDER = "c66-archiver-imports"
"""Where `import --backup` stages plaintext copies for Cloud 66 (`lifecycle.import_staging`)."""

LEFTOVER_IDLE = timedelta(hours=1)
"""How long an unfinished upload of a process that takes no lock must have gone unwritten
before a pass takes it for a crash's leftover: far past any stall of a live writer (its
retries give up within minutes) and any clock skew between us and an SFTP server."""


def written_beside_passes(key: str) -> bool:
    """True for what processes that take no lock write while a pass may run: a probe
    object at the root, an import's staging copy (ARCHITECTURE.md, "Who takes which lock")."""
    return key.startswith(PROBE_PREFIX) or key.split("/", 1)[0] == STAGING_FOLDER


def removable_leftover(
    key: str, last_written: datetime | None, *, idle_for: timedelta, now: datetime | None = None
) -> bool:
    """Whether a pass's cleanup takes the unfinished upload of `key` (relative to the root,
    any `.part` suffix included), last written at `last_written` (None: unknown).

    A pass's own leftovers, at once; another process's (`written_beside_passes`) only once
    idle for `idle_for`: an unknown age keeps it.
    """
    if not written_beside_passes(key):
        return True
    if last_written is None:
        return False
    return (now or datetime.now(UTC)) - last_written >= idle_for


# A piece of a chunk as the network delivered it (bytes), or a receive buffer (a view).
Piece = bytes | bytearray | memoryview


@dataclass(frozen=True)
class ObjectInfo:
    """What `stat` knows of a completed object."""

    key: str
    size: int
    # Until when S3 Object Lock keeps the object from being deleted (None: not locked).
    locked_until: datetime | None = None


def check_key(key: str) -> str:
    """Refuse keys that are empty, absolute, or could climb out of the root."""
    parts = key.split("/")
    if (
        not key
        or key.startswith("/")
        or "\\" in key
        or "\x00" in key
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise PermanentStorageError(f"refusing unsafe storage key {key!r}")
    return key


def check_final_key(key: str) -> str:
    """`check_key`, and refuse the suffix reserved for unfinished data."""
    check_key(key)
    if key.rsplit("/", 1)[-1].endswith(PART_SUFFIX):
        raise PermanentStorageError(f"refusing storage key {key!r}: '{PART_SUFFIX}' is reserved")
    return key


class SegmentWriter(Protocol):
    """Sequential writer for one segment of an upload."""

    async def write(self, chunk: bytes) -> None:
        """Append `chunk` at the segment's current position. Not re-entrant."""

    async def rewind(self) -> None:
        """Drop what this segment wrote and start it again at its offset."""

    async def close(self) -> None:
        """Flush the segment. The segment's bytes count toward `commit` only after this."""


@runtime_checkable
class ThreadWritableSegment(SegmentWriter, Protocol):
    """A segment that can also be written from a worker thread, without the event loop.

    Local files are: a thread that hashes a chunk writes it from the same buffers,
    one hand-off per chunk instead of two. Backends that talk to a server through
    the event loop (S3, SFTP) are not.
    """

    def write_in_thread(self, pieces: Sequence[Piece]) -> None:
        """Append `pieces`, blocking. One thread at a time, never the event loop's."""


class Upload(Protocol):
    """A file being assembled under a temporary name; invisible until `commit`."""

    async def open_segment(self, index: int, offset: int) -> SegmentWriter:
        """Start segment `index` (0-based, in file order) at byte `offset` of the file.

        Segments may be open concurrently. Where the backend needs offsets (local,
        SFTP) the offset is honoured; where it needs order (S3 multipart) the index is.
        """

    async def read_back(self, offset: int, size: int) -> bytes:
        """Read bytes already written: cheap where `Storage.supports_read_back`, and on
        every backend for the durable bytes of a resumed upload."""

    async def commit(self, *, size: int, sha256: str) -> None:
        """Make the file visible under its key, durably and atomically.

        `size` is checked against what was written; `sha256` is stored as metadata
        where the backend has it. After commit, the upload may not be used.
        """

    async def abort(self) -> None:
        """Remove every trace of the upload. Idempotent; safe after a failed commit."""

    async def suspend(self) -> None:
        """Leave the upload unfinished but durable, for `Storage.resume_upload` in a later
        pass or process (a stop, a download that kept failing). Idempotent; the upload
        may not be used afterwards."""


class UploadEnd:
    """Is an upload still open? Asked one way by every backend, with one error when not.

    An upload ends when it is committed, suspended or aborted; from then on every
    write, read back or segment raises `finished()`. `committed` is kept apart: an
    upload whose commit failed has ended for writing but must still be aborted.
    """

    def __init__(self, location: str) -> None:
        self._location = location
        self.ended = False
        self.committed = False

    def check_open(self) -> None:
        """Raise `finished()` once the upload has ended."""
        if self.ended:
            raise self.finished()

    def finished(self) -> PermanentStorageError:
        """The error of a use after the end."""
        return PermanentStorageError(f"upload of {self._location} is already finished")

    def end(self, *, committed: bool = False) -> None:
        """No more writes (and, with `committed`, nothing left to abort)."""
        self.ended = True
        self.committed = self.committed or committed


@dataclass(frozen=True)
class ResumedUpload:
    """An unfinished upload an earlier process left, reopened to be continued."""

    upload: Upload
    durable: int
    """Bytes from the start of the file that were kept; `upload.read_back` reads them."""


class UploadTarget(Protocol):
    """Where an upload can be started or resumed: a storage, or several at once
    (`archiver.transfer.fan_out`)."""

    async def start_upload(self, key: str) -> Upload:
        """Begin writing `key`; any earlier unfinished upload of `key` is discarded."""

    async def resume_upload(self, key: str) -> ResumedUpload | None:
        """Reopen the unfinished upload of `key` (see `Storage.resume_upload`)."""


class Storage(Protocol):
    """A place to keep archives: local folder, S3 bucket, SFTP server."""

    supports_read_back: bool
    """True when `Upload.read_back` is cheap (local disk, page cache)."""

    def location(self, key: str) -> str:
        """How users name the object: a local path, `s3://bucket/key`, `sftp://...`."""

    async def start_upload(self, key: str) -> Upload:
        """Begin writing `key`; any earlier unfinished upload of `key` is discarded."""

    async def resume_upload(self, key: str) -> ResumedUpload | None:
        """Reopen the unfinished upload of `key` that an earlier upload left (suspended, or
        cut short by a crash), with how many bytes from its start are durable; None
        when there is none, or nothing durable in it.

        The reopened upload continues where `durable` ends: its next segment opens at
        `durable`, and `read_back` works on the bytes before it (whatever the backend:
        the caller must hash them again).
        """

    async def write_small(self, key: str, data: bytes) -> None:
        """Write a small object (a manifest) atomically and durably, replacing any old one."""

    async def read_small(self, key: str) -> bytes:
        """Read a small object whole. Raises FileNotFoundError when it does not exist."""

    def read_chunks(
        self, key: str, *, chunk_size: int = READ_CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]:
        """Stream a completed object from its first byte, at most `chunk_size` bytes a chunk.

        Raises FileNotFoundError (when iteration starts) if there is no such object.
        Memory stays about one chunk (two where the backend reads one ahead),
        whatever the object's size.
        """

    async def stat(self, key: str) -> ObjectInfo | None:
        """Size of a completed object, or None. Unfinished uploads are not seen."""

    def list(self, prefix: str = "") -> AsyncIterator[str]:
        """Yield the keys of completed objects under `prefix` (a folder-like prefix, '' = all)."""

    async def shareable_url(self, key: str, expires: timedelta) -> str | None:
        """A URL anyone may GET `key` from until `expires` from now (S3: pre-signed), or
        None when the backend cannot give one (a local folder, an SFTP server)."""

    async def remove(self, key: str) -> None:
        """Delete a completed object. Idempotent: a missing key is not an error."""

    async def remove_incomplete(
        self, keep: Collection[str] = (), *, idle_for: timedelta = LEFTOVER_IDLE
    ) -> int:
        """Remove leftovers of interrupted uploads, except those of the keys in `keep` (to be
        resumed) and what a live process that takes no lock is writing; return how many.

        Run by each pass once it knows what it will resume. Beside it may run a
        `check-config` probe or an `import --backup` staging upload of another process
        (`written_beside_passes`): their leftovers go only once idle for `idle_for` (no
        write since), as a live writer writes on. Everything else unfinished is a
        pass's own, and no other pass runs (the instance lock).
        """

    async def probe(self) -> None:
        """Write, read back and delete a probe object; raise StorageError naming what failed."""

    async def aclose(self) -> None:
        """Release connections and threads."""


@runtime_checkable
class Lockable(Protocol):
    """A storage that can keep objects from being deleted for a while (S3 Object Lock)."""

    async def lock(self, key: str, until: datetime) -> None:
        """Keep `key` (its current version) from being deleted or overwritten until `until`."""

    async def lock_problem(self) -> str | None:
        """None when the bucket can lock objects, else why not (for `check-config`)."""


class _SmallObjects(Protocol):
    async def write_small(self, key: str, data: bytes) -> None: ...
    async def read_small(self, key: str) -> bytes: ...
    async def remove(self, key: str) -> None: ...


async def probe_round_trip(storage: _SmallObjects, where: str) -> None:
    """Write, read back and delete a probe object; any failure names `where` and the cause.

    The shared body of every backend's `probe`.
    """
    key = f"{PROBE_PREFIX}{secrets.token_hex(8)}"
    payload = secrets.token_bytes(32)
    try:
        await storage.write_small(key, payload)
        if await storage.read_small(key) != payload:
            raise PermanentStorageError("the probe object read back different bytes")
        await storage.remove(key)
    except (OSError, StorageError) as error:
        raise PermanentStorageError(f"{where} is not usable: {error}") from error


class _OffsetWriter(Protocol):
    async def write_at(self, chunk: bytes, offset: int) -> None: ...


class OffsetSegment:
    """A segment for backends that write at offsets (local files, SFTP): no buffering."""

    def __init__(self, upload: _OffsetWriter, offset: int) -> None:
        if offset < 0:
            raise ValueError(f"segment offset must be >= 0, not {offset}")
        self._upload = upload
        self._offset = offset
        self._position = offset

    async def write(self, chunk: bytes) -> None:
        """Write `chunk` at the segment's position."""
        await self._upload.write_at(chunk, self._position)
        self._position += len(chunk)

    async def rewind(self) -> None:
        """Start again at the segment's offset; later writes overwrite what was there."""
        self._position = self._offset

    async def close(self) -> None:
        """Nothing to flush: each write reached the file (or server); commit makes it durable."""

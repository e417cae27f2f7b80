"""A folder on this machine as archive storage.

Every blocking call runs in one dedicated thread pool (never the loop's default
pool, which DNS lookups share). Unfinished uploads live at `<key>.part`, so a
final name only ever holds a complete, fsynced file. Files are created 0600 and
folders 0700 whatever the umask (`archiver.core.private_files`).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import os
import secrets
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from stat import S_ISREG
from typing import TypeVar

import aiofiles
from aiofiles.threadpool.binary import AsyncFileIO

from archiver.core.errors import (
    IntegrityError,
    PermanentStorageError,
    StorageError,
    StorageFull,
    TransientStorageError,
)
from archiver.core.private_files import create_private_file, fsync_folder, make_private_folders
from archiver.storage.base import (
    LEFTOVER_IDLE,
    PART_SUFFIX,
    READ_CHUNK_SIZE,
    ObjectInfo,
    OffsetSegment,
    Piece,
    ResumedUpload,
    UploadEnd,
    check_final_key,
    check_key,
    probe_round_trip,
    removable_leftover,
)

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
# How often a segment written from a thread starts the writeback of what it wrote.
WRITEBACK_STEP = 32 * 1024 * 1024
_NOT_ALLOWED = {errno.EACCES, errno.EPERM, errno.EROFS}

_T = TypeVar("_T")


def classify_os_error(error: OSError, path: Path | str) -> StorageError:
    """Class an OSError: a full disk or a refusal is permanent, anything else transient."""
    if error.errno in _NO_SPACE:
        return StorageFull(f"no space left on {path}")
    if error.errno in _NOT_ALLOWED:
        return PermanentStorageError(f"permission denied on {path} ({error.strerror})")
    return TransientStorageError(f"storage error on {path}: {error.strerror or error}")


def _pwrite_all(descriptor: int, data: bytes, offset: int) -> None:
    """pwrite may write less than asked (signals, odd filesystems): loop until done."""
    view = memoryview(data)
    while view:
        written = os.pwrite(descriptor, view, offset)
        view = view[written:]
        offset += written


def _pwritev_all(descriptor: int, pieces: Sequence[Piece], offset: int) -> None:
    """One pwritev for all of `pieces`, looping on short writes."""
    views = [memoryview(piece) for piece in pieces if piece]
    while views:
        written = os.pwritev(descriptor, views, offset)
        offset += written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


def _pread_all(descriptor: int, size: int, offset: int) -> bytes:
    """Read up to `size` bytes at `offset`, short only at end of file."""
    pieces: list[bytes] = []
    while size > 0:
        piece = os.pread(descriptor, size, offset)
        if not piece:
            break
        pieces.append(piece)
        size -= len(piece)
        offset += len(piece)
    return b"".join(pieces)


def _reopen_part(part: Path) -> tuple[int, int] | None:
    """An existing part file opened for writing and fsynced (what a killed process wrote
    is made durable now), with its size; None when there is none or it is empty."""
    try:
        descriptor = os.open(part, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        status = os.fstat(descriptor)
        if S_ISREG(status.st_mode) and status.st_size > 0:
            os.fsync(descriptor)
            return descriptor, status.st_size
    except BaseException:
        os.close(descriptor)
        raise
    os.close(descriptor)
    return None


def _sync_and_close(descriptor: int) -> None:
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _unlink_if_same(path: Path, inode: tuple[int, int]) -> None:
    """Unlink `path` only if it is still the file we created (a newer upload may own it)."""
    try:
        status = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return
    if (status.st_dev, status.st_ino) == inode:
        path.unlink(missing_ok=True)


def _prune_empty_folders(root: Path, folder: Path) -> None:
    """Remove `folder` and its parents while they are empty, stopping at `root`."""
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (or gone, or busy): nothing more to prune
        folder = folder.parent


class LocalSegment(OffsetSegment):
    """A segment of a local file: written from the event loop, or straight from a thread.

    Written from a thread, it starts the disk writeback of what it wrote every
    `WRITEBACK_STEP` bytes, so the fsync at commit finds little left to do (1 GiB:
    0.35 s of fsync -> 0.03 s, for 0.06 CPU-s more while writing), and drops those
    pages from the page cache once they are clean: an archive is not read again.
    """

    def __init__(self, upload: LocalUpload, offset: int) -> None:
        super().__init__(upload, offset)
        self._local = upload
        self._written_back = offset

    def write_in_thread(self, pieces: Sequence[Piece]) -> None:
        """Write `pieces` at the segment's position with one pwritev (blocking)."""
        self._local.write_pieces(pieces, self._position)
        self._position += sum(len(piece) for piece in pieces)
        if self._position - self._written_back >= WRITEBACK_STEP:
            # The step before this one is clean by now: it goes from the cache too.
            start = max(self._offset, self._written_back - WRITEBACK_STEP)
            self._local.write_back(start, self._position - start)
            self._written_back = self._position

    async def rewind(self) -> None:
        """Start again at the segment's offset."""
        await super().rewind()
        self._written_back = self._offset


class LocalUpload:
    """A file assembled at `<final>.part`, renamed into place on commit.

    Writes come from the storage's pool or from a transfer's own thread; the
    descriptor is closed only under `_descriptor_lock`, so a write still running
    when the upload ends fails cleanly instead of landing in a reused descriptor.
    """

    def __init__(self, storage: LocalStorage, final: Path, descriptor: int) -> None:
        self._storage = storage
        self._final = final
        self._part = final.with_name(final.name + PART_SUFFIX)
        self._descriptor: int | None = descriptor
        self._descriptor_lock = threading.Lock()
        self._end = UploadEnd(str(final))
        status = os.fstat(descriptor)
        self._inode = (status.st_dev, status.st_ino)

    def _open_descriptor(self) -> int:
        self._end.check_open()
        assert self._descriptor is not None  # None exactly once ended: _take_descriptor
        return self._descriptor

    async def open_segment(self, index: int, offset: int) -> LocalSegment:
        """A writer at `offset`; the index does not matter to a file."""
        del index
        self._open_descriptor()
        return LocalSegment(self, offset)

    async def write_at(self, chunk: bytes, offset: int) -> None:
        """Write `chunk` at `offset` of the part file, in the storage's thread pool."""
        self._open_descriptor()
        await self._storage.run(self._part, self._write_locked, [chunk], offset)

    def write_pieces(self, pieces: Sequence[Piece], offset: int) -> None:
        """Write `pieces` at `offset` from the calling thread; errors as StorageErrors."""
        try:
            self._write_locked(pieces, offset)
        except FileNotFoundError:
            raise
        except OSError as error:
            raise classify_os_error(error, self._part) from error

    def _write_locked(self, pieces: Sequence[Piece], offset: int) -> None:
        with self._descriptor_lock:
            _pwritev_all(self._open_descriptor(), pieces, offset)

    def write_back(self, offset: int, size: int) -> None:
        """Start writing a range to disk and drop its clean pages; advice, never an error."""
        with self._descriptor_lock:
            if self._descriptor is None:
                return
            # On Linux, DONTNEED starts the writeback of dirty pages (without waiting)
            # and evicts the clean ones.
            with contextlib.suppress(OSError):
                os.posix_fadvise(self._descriptor, offset, size, os.POSIX_FADV_DONTNEED)

    async def read_back(self, offset: int, size: int) -> bytes:
        """Read bytes already written (short only at the end of what was written)."""
        descriptor = self._open_descriptor()
        return await self._storage.run(self._part, _pread_all, descriptor, size, offset)

    async def commit(self, *, size: int, sha256: str) -> None:
        """Check the length, fsync, rename into place, fsync the folder."""
        del sha256  # a plain file has nowhere to keep it; the manifest records it
        descriptor = self._open_descriptor()
        await self._storage.run(self._part, self._check_and_flush, descriptor, size)
        # From here the descriptor is closed whatever happens, so abort must not touch it.
        self._take_descriptor()
        await self._storage.run(self._part, self._publish, descriptor)
        self._end.end(committed=True)

    def _take_descriptor(self) -> int | None:
        """Forget the descriptor (once no write holds it); the caller closes it."""
        with self._descriptor_lock:
            descriptor, self._descriptor = self._descriptor, None
            self._end.end()
        return descriptor

    def _check_and_flush(self, descriptor: int, size: int) -> None:
        written = os.fstat(descriptor).st_size
        if written != size:
            raise IntegrityError(f"{self._part} holds {written} bytes, expected {size}")
        try:
            status = os.stat(self._part, follow_symlinks=False)
        except FileNotFoundError:
            status = None
        if status is None or (status.st_dev, status.st_ino) != self._inode:
            raise PermanentStorageError(
                f"upload of {self._final} was discarded (a newer upload or a cleanup)"
            )
        os.fsync(descriptor)

    def _publish(self, descriptor: int) -> None:
        os.close(descriptor)
        os.replace(self._part, self._final)
        fsync_folder(self._final.parent)

    async def suspend(self) -> None:
        """fsync and close the part file, and leave it for `resume_upload`."""
        if self._end.committed:
            return
        descriptor = self._take_descriptor()
        if descriptor is not None:
            await self._storage.run(self._part, _sync_and_close, descriptor)

    async def abort(self) -> None:
        """Close and unlink the part file. Idempotent; a no-op after a successful commit."""
        if self._end.committed:
            return
        await self._storage.run(self._part, self._abort_sync, self._take_descriptor())

    def _abort_sync(self, descriptor: int | None) -> None:
        if descriptor is not None:
            os.close(descriptor)
        # Only our own file: a newer upload of the same key may own the part name now.
        _unlink_if_same(self._part, self._inode)


class LocalStorage:
    """The Storage protocol on a local folder (see `archiver.storage.base`)."""

    supports_read_back = True

    def __init__(self, root: Path, *, executor: ThreadPoolExecutor | None = None) -> None:
        # Resolved once, so that every later containment check compares real paths.
        self._root = Path(os.path.realpath(root))
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(
            max_workers=8, thread_name_prefix="c66-local-storage"
        )
        # Temporary files of small writes in flight. `remove_incomplete` leaves them be: in
        # the daemon a /readyz probe writes while a pass cleans up, and the temp file a
        # write is about to rename is nobody's leftover.
        self._writing: set[str] = set()
        self._writing_lock = threading.Lock()

    @property
    def root(self) -> Path:
        """The real path of the archive folder."""
        return self._root

    async def run(self, path: Path, function: Callable[..., _T], *args: object) -> _T:
        """Run blocking `function` in our pool; OSErrors become StorageErrors naming `path`."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function, *args)
        except FileNotFoundError:
            raise
        except OSError as error:
            raise classify_os_error(error, path) from error

    def _path(self, key: str) -> Path:
        """The final path of `key`, refusing unsafe keys and anything that leaves the root."""
        return self._inside_root(self._root / check_final_key(key), key)

    def _inside_root(self, path: Path, key: str) -> Path:
        # realpath follows symlinks already on disk: a link pointing out of the root
        # anywhere along the way is refused, not followed.
        real = os.path.realpath(path)
        if real != str(self._root) and not real.startswith(str(self._root) + os.sep):
            raise PermanentStorageError(f"refusing storage key {key!r}: it leaves {self._root}")
        return path

    def location(self, key: str) -> str:
        """The absolute path of the archived file."""
        return str(self._path(key))

    async def start_upload(self, key: str) -> LocalUpload:
        """Create a fresh `<key>.part`, discarding any earlier one."""
        final = self._path(key)
        part = final.with_name(final.name + PART_SUFFIX)
        descriptor = await self.run(part, self._start_upload_sync, part)
        return LocalUpload(self, final, descriptor)

    async def resume_upload(self, key: str) -> ResumedUpload | None:
        """Reopen `<key>.part` where an earlier upload left it; its length is durable."""
        final = self._path(key)
        part = final.with_name(final.name + PART_SUFFIX)
        opened = await self.run(part, _reopen_part, part)
        if opened is None:
            return None
        descriptor, size = opened
        return ResumedUpload(LocalUpload(self, final, descriptor), size)

    def _start_upload_sync(self, part: Path) -> int:
        make_private_folders(part.parent)
        # Unlink rather than truncate: an older upload still holding the old file
        # then writes into an orphan and can never rename it over ours.
        part.unlink(missing_ok=True)
        return create_private_file(part)

    async def write_small(self, key: str, data: bytes) -> None:
        """Temp file in the same folder, fsync, rename over the old one, fsync the folder."""
        final = self._path(key)
        temporary = final.with_name(f"{final.name}.{secrets.token_hex(6)}{PART_SUFFIX}")
        # Known as ours before it exists, so no cleanup can take it for a leftover.
        with self._writing_lock:
            self._writing.add(str(temporary))
        try:
            await self.run(final, self._write_small_sync, final, temporary, data)
        finally:
            with self._writing_lock:
                self._writing.discard(str(temporary))

    def _write_small_sync(self, final: Path, temporary: Path, data: bytes) -> None:
        make_private_folders(final.parent)
        descriptor = create_private_file(temporary)
        try:
            try:
                _pwrite_all(descriptor, data, 0)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.replace(temporary, final)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        fsync_folder(final.parent)

    async def read_small(self, key: str) -> bytes:
        """The whole file; FileNotFoundError when there is none."""
        path = self._path(key)
        return await self.run(path, path.read_bytes)

    async def read_chunks(
        self, key: str, *, chunk_size: int = READ_CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]:
        """The file in chunks, the next one read while the caller works on this one.

        Through aiofiles on our pool: one thread hop per chunk, as a hand-written pread
        loop costs (bench/aiofiles_bench.py), the file object's position doing the rest.
        """
        path = self._path(key)
        try:
            source = await aiofiles.open(path, "rb", buffering=0, executor=self._executor)
        except FileNotFoundError:
            raise
        except OSError as error:
            raise classify_os_error(error, path) from error
        pending = asyncio.ensure_future(self._read(source, path, chunk_size))
        try:
            while chunk := await pending:
                pending = asyncio.ensure_future(self._read(source, path, chunk_size))
                yield chunk
        finally:
            # The read ahead must end before its file is closed.
            await asyncio.gather(pending, return_exceptions=True)
            await source.close()

    @staticmethod
    async def _read(source: AsyncFileIO, path: Path, size: int) -> bytes:
        """Up to `size` bytes, short only at the end of the file."""
        pieces: list[bytes] = []
        try:
            while size > 0 and (piece := await source.read(size)):
                pieces.append(piece)
                size -= len(piece)
        except OSError as error:
            raise classify_os_error(error, path) from error
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def stat(self, key: str) -> ObjectInfo | None:
        """Size of a completed file, or None (parts are never final names)."""
        path = self._path(key)
        size = await self.run(path, self._file_size, path)
        return None if size is None else ObjectInfo(key=key, size=size)

    @staticmethod
    def _file_size(path: Path) -> int | None:
        try:
            status = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return status.st_size if S_ISREG(status.st_mode) else None

    async def list(self, prefix: str = "") -> AsyncIterator[str]:
        """Yield completed keys under the folder `prefix`, sorted; parts and temps hidden."""
        folder = self._root
        trimmed = prefix.strip("/")
        if trimmed:
            folder = self._inside_root(self._root / check_key(trimmed), prefix)
        for key in await self.run(folder, self._list_sync, folder):
            yield key

    def _list_sync(self, folder: Path) -> builtins.list[str]:
        keys: builtins.list[str] = []
        # os.walk does not follow symlinked folders, and symlinked files are
        # skipped below, so nothing outside the root is ever listed.
        for current, _folders, files in os.walk(folder):
            for name in files:
                path = Path(current, name)
                if name.endswith(PART_SUFFIX) or path.is_symlink() or not path.is_file():
                    continue
                keys.append(path.relative_to(self._root).as_posix())
        return sorted(keys)

    async def shareable_url(self, key: str, expires: timedelta) -> str | None:
        """None: this backend has no URL that Cloud 66 could fetch an object from."""
        del key, expires
        return None

    async def remove(self, key: str) -> None:
        """Delete a completed file and its now-empty folders. Missing is fine."""
        path = self._path(key)
        await self.run(path, self._remove_sync, path)

    def _remove_sync(self, path: Path) -> None:
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        _prune_empty_folders(self._root, path.parent)

    async def remove_incomplete(
        self, keep: Collection[str] = (), *, idle_for: timedelta = LEFTOVER_IDLE
    ) -> int:
        """Delete every `*.part` under the root but those of keys in `keep`, the temp files
        of small writes in flight here, and another process's probe or staging copy while
        it is written (see `Storage.remove_incomplete`); return how many."""
        kept = {str(self._path(key)) + PART_SUFFIX for key in keep}
        return await self.run(self._root, self._remove_incomplete_sync, kept, idle_for)

    def _remove_incomplete_sync(self, kept: set[str], idle_for: timedelta) -> int:
        removed = 0
        for current, _folders, files in os.walk(self._root):
            for name in files:
                path = str(Path(current, name))
                if not name.endswith(PART_SUFFIX) or path in kept or self._being_written(path):
                    continue
                key = os.path.relpath(path, self._root)
                if not removable_leftover(key, _modified(path), idle_for=idle_for):
                    continue
                Path(path).unlink(missing_ok=True)
                removed += 1
        return removed

    def _being_written(self, path: str) -> bool:
        """True while a small write of ours owns `path` (asked per file, never a snapshot:
        a write may start while the cleanup walks)."""
        with self._writing_lock:
            return path in self._writing

    async def probe(self) -> None:
        """Write, read back and delete a probe file at the root."""
        await probe_round_trip(self, f"storage {self._root}")

    async def aclose(self) -> None:
        """Stop our thread pool (not one the caller lent us)."""
        if self._owns_executor:
            await asyncio.to_thread(self._executor.shutdown, wait=True)


def _modified(path: str) -> datetime | None:
    """When the file at `path` was last written; None when it is gone."""
    try:
        return datetime.fromtimestamp(os.stat(path, follow_symlinks=False).st_mtime, UTC)
    except FileNotFoundError:
        return None

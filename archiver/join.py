"""One backup's parts joined in order into one storage upload, committed only when whole.

The parts of a multi-part Cloud 66 backup are plain byte pieces of one tar
(`cat x.tar-aa x.tar-ab > x.tar`). Each part is downloaded (`archiver.download`)
straight into its segment of one upload, so the join never writes a byte
twice; the joined sha256 is computed along the way.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog

from archiver.download import ByteCallback, Downloader, PartSource
from archiver.errors import StorageError, TransferError
from archiver.manifest import PartRecord
from archiver.storage.base import SegmentWriter, Storage, Upload

log = structlog.get_logger(__name__)

_READ_BACK_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class JoinedResult:
    """The joined backup as committed to storage."""

    size: int
    sha256: str
    parts: list[PartRecord]


class _PartHandoff:
    """What one part of a concurrent join tells the others: where it starts, how it ended."""

    def __init__(self) -> None:
        self.offset: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.result: asyncio.Future[PartRecord] = asyncio.get_running_loop().create_future()


class BackupJoiner:
    """Streams all parts of one backup into one upload, joined in order."""

    def __init__(
        self, downloader: Downloader, storage: Storage, executor: ThreadPoolExecutor
    ) -> None:
        self._downloader = downloader
        self._storage = storage
        self._executor = executor

    async def archive(
        self,
        key: str,
        parts: Sequence[PartSource],
        *,
        on_size: ByteCallback,
        on_bytes: ByteCallback,
    ) -> JoinedResult:
        """Download every part into `key`; commit only when all of it checked out."""
        if not parts:
            raise TransferError("the backup lists no files")
        upload = await self._storage.start_upload(key)
        try:
            joined = await self._join(upload, parts, on_size, on_bytes)
            await upload.commit(size=joined.size, sha256=joined.sha256)
        except BaseException:
            await asyncio.shield(self._abort_quietly(upload))
            raise
        return joined

    async def _join(
        self,
        upload: Upload,
        parts: Sequence[PartSource],
        on_size: ByteCallback,
        on_bytes: ByteCallback,
    ) -> JoinedResult:
        if len(parts) == 1:
            segment = await upload.open_segment(0, 0)
            result = await self._downloader.fetch_part(
                parts[0], segment, on_size=on_size, on_bytes=on_bytes
            )
            return JoinedResult(size=result.size, sha256=result.sha256, parts=[result])
        if self._storage.supports_read_back:
            return await self._join_concurrently(upload, parts, on_size, on_bytes)
        return await self._join_in_order(upload, parts, on_size, on_bytes)

    async def _join_concurrently(
        self,
        upload: Upload,
        parts: Sequence[PartSource],
        on_size: ByteCallback,
        on_bytes: ByteCallback,
    ) -> JoinedResult:
        """All parts download at once; each starts where the previous one's length ends.

        Part k+1's offset is known as soon as part k's response headers arrive, so
        the parts overlap almost completely. The joined sha256 is computed by reading
        each finished part back (from the page cache) in order, while later parts
        are still downloading.
        """
        handoffs = [_PartHandoff() for _ in parts]
        handoffs[0].offset.set_result(0)
        tasks = [
            asyncio.create_task(
                self._fetch_at_offset(upload, index, parts, handoffs, on_size, on_bytes)
            )
            for index in range(len(parts))
        ]
        try:
            whole_sha256 = await self._hash_in_order(upload, handoffs)
            results = [await task for task in tasks]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for handoff in handoffs:  # the failure was raised through a task already
                if handoff.result.done() and not handoff.result.cancelled():
                    handoff.result.exception()
        return JoinedResult(size=sum(r.size for r in results), sha256=whole_sha256, parts=results)

    async def _fetch_at_offset(
        self,
        upload: Upload,
        index: int,
        parts: Sequence[PartSource],
        handoffs: list[_PartHandoff],
        on_size: ByteCallback,
        on_bytes: ByteCallback,
    ) -> PartRecord:
        handoff = handoffs[index]
        try:
            offset = await handoff.offset
            segment = await upload.open_segment(index, offset)

            reported = False

            def size_known(size: int) -> None:
                nonlocal reported
                if reported:
                    return
                reported = True
                on_size(size)
                if index + 1 < len(handoffs):
                    handoffs[index + 1].offset.set_result(offset + size)

            result = await self._downloader.fetch_part(
                parts[index], segment, on_size=size_known, on_bytes=on_bytes
            )
            size_known(result.size)  # a server without Content-Length: known only now
        except BaseException as error:
            if not handoff.result.done():
                handoff.result.set_exception(error)
            raise
        handoff.result.set_result(result)
        return result

    async def _hash_in_order(self, upload: Upload, handoffs: list[_PartHandoff]) -> str:
        whole = hashlib.sha256()
        loop = asyncio.get_running_loop()
        for handoff in handoffs:
            result = await handoff.result
            offset = handoff.offset.result()
            for start in range(0, result.size, _READ_BACK_CHUNK):
                length = min(_READ_BACK_CHUNK, result.size - start)
                data = await upload.read_back(offset + start, length)
                await loop.run_in_executor(self._executor, whole.update, data)
        return whole.hexdigest()

    async def _join_in_order(
        self,
        upload: Upload,
        parts: Sequence[PartSource],
        on_size: ByteCallback,
        on_bytes: ByteCallback,
    ) -> JoinedResult:
        """For backends that cannot read back: one part after the other, hashed as it streams."""
        whole = _JoinedHash()
        results: list[PartRecord] = []
        offset = 0
        for index, part in enumerate(parts):
            inner = await upload.open_segment(index, offset)
            segment = _HashingSegment(inner, whole, self._executor)
            result = await self._downloader.fetch_part(
                part, segment, on_size=on_size, on_bytes=on_bytes
            )
            results.append(result)
            offset += result.size
        return JoinedResult(size=offset, sha256=whole.hexdigest(), parts=results)

    @staticmethod
    async def _abort_quietly(upload: Upload) -> None:
        try:
            await upload.abort()
        except StorageError as error:
            log.warning("could not remove an unfinished upload", error=str(error))


class _JoinedHash:
    """The sha256 of the joined file, fed part after part."""

    def __init__(self) -> None:
        self.hasher: Any = hashlib.sha256()

    def hexdigest(self) -> str:
        """The digest so far."""
        return str(self.hasher.hexdigest())


class _HashingSegment:
    """A segment that also feeds the joined hash; a rewind rolls the hash back too."""

    def __init__(
        self, inner: SegmentWriter, whole: _JoinedHash, executor: ThreadPoolExecutor
    ) -> None:
        self._inner = inner
        self._whole = whole
        self._executor = executor
        self._at_segment_start = whole.hasher.copy()

    async def write(self, chunk: bytes) -> None:
        """Write the chunk and hash it for the joined digest, in parallel."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            self._inner.write(chunk),
            loop.run_in_executor(self._executor, self._whole.hasher.update, chunk),
        )

    async def rewind(self) -> None:
        """Start the segment over, and the joined hash with it."""
        await self._inner.rewind()
        self._whole.hasher = self._at_segment_start.copy()

    async def close(self) -> None:
        """Close the underlying segment."""
        await self._inner.close()

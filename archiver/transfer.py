"""One backup's files: fresh URLs, streaming, hashing, resume, and the in-order join.

Each upstream file (part) is streamed from its pre-signed URL straight into a
segment of one storage upload, so multi-part backups are joined without writing
the bytes twice. Hashing (sha256 always, MD5 only when the ETag is a plain MD5)
runs in worker threads while the next chunk is read from the network.

Knows nothing of Cloud 66 or of the state: the caller hands it a way to get a
fresh URL for each part.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import structlog
import yarl

from archiver.errors import IntegrityError, StorageError, TransferError, UrlExpired
from archiver.retry import Backoff
from archiver.storage.base import SegmentWriter, Storage, Upload

log = structlog.get_logger(__name__)

_PLAIN_MD5 = re.compile(r"[0-9a-f]{32}")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
# Refresh a pre-signed URL before a resume when it expires within this margin:
# S3 checks expiry when a request starts, so a resume needs a URL that is still valid.
_URL_REFRESH_MARGIN_SECONDS = 30.0
_READ_BACK_CHUNK = 4 * 1024 * 1024

UrlSource = Callable[[], Awaitable[str]]
ByteCallback = Callable[[int], None]


@dataclass(frozen=True)
class PartSource:
    """One upstream file of a backup and how to get a fresh URL for it."""

    id: str
    name: str
    fresh_url: UrlSource


@dataclass(frozen=True)
class PartResult:
    """What was downloaded for one part."""

    id: str
    name: str
    size: int
    sha256: str
    etag: str | None


@dataclass(frozen=True)
class JoinedResult:
    """The joined backup as committed to storage."""

    size: int
    sha256: str
    parts: list[PartResult]


@dataclass
class _PartProgress:
    """Mutable progress of one part's download."""

    written: int = 0
    total: int | None = None
    etag: str | None = None
    md5_expected: str | None = None
    sha256: Any = field(default_factory=hashlib.sha256)
    md5: Any = None

    def restart(self) -> None:
        """Forget everything: the server sent the whole body again."""
        self.written = 0
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False) if self.md5_expected else None


def plain_md5_etag(etag: str | None) -> str | None:
    """The MD5 an S3 ETag stands for, or None for multipart (`-N`) or odd ETags."""
    if not etag:
        return None
    value = etag.strip().removeprefix("W/").strip('"').lower()
    return value if _PLAIN_MD5.fullmatch(value) else None


def url_expires_soon(url: str, *, margin: float = _URL_REFRESH_MARGIN_SECONDS) -> bool:
    """True when a pre-signed URL's `Expires` (SigV2) or `X-Amz-Expires` (SigV4) is near."""
    query = parse_qs(urlsplit(url).query)
    try:
        if "Expires" in query:
            return float(query["Expires"][0]) - time.time() < margin
        if "X-Amz-Date" in query and "X-Amz-Expires" in query:
            signed = time.mktime(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ"))
            signed -= time.timezone  # X-Amz-Date is UTC; mktime assumed local time
            return signed + float(query["X-Amz-Expires"][0]) - time.time() < margin
    except (ValueError, IndexError):
        return True
    return False


class _Retryable(Exception):
    """Internal: the download broke off in a way a resume can fix."""


class Downloader:
    """Streams parts into storage segments with resume, URL refresh and integrity checks."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        executor: ThreadPoolExecutor,
        download_slots: asyncio.Semaphore,
        max_retries: int,
        chunk_size: int = 1024 * 1024,
        verify_etag: bool = True,
        backoff: Backoff | None = None,
    ) -> None:
        self._session = session
        self._chunk_size = chunk_size
        self._verify_etag = verify_etag
        self._executor = executor
        self._slots = download_slots
        self._max_retries = max_retries
        self._backoff = backoff or Backoff()

    async def fetch_part(
        self,
        part: PartSource,
        segment: SegmentWriter,
        *,
        on_size: ByteCallback,
        on_bytes: ByteCallback,
    ) -> PartResult:
        """Download one part into `segment`, resuming after cuts, expiry and resets."""
        progress = _PartProgress()
        url = await part.fresh_url()
        failures = 0
        while True:
            try:
                await self._attempt(url, progress, segment, on_size, on_bytes)
                break
            except UrlExpired:
                failures += 1
                self._check_budget(part, failures, "the download URL kept expiring")
                url = await part.fresh_url()
            except _Retryable as problem:
                failures += 1
                self._check_budget(part, failures, str(problem))
                log.info(
                    "download interrupted; resuming",
                    part=part.id,
                    at_byte=progress.written,
                    reason=str(problem),
                    attempt=failures,
                )
                await asyncio.sleep(self._backoff.delay(failures - 1))
                if url_expires_soon(url):
                    url = await part.fresh_url()
        await segment.close()
        return self._verified(part, progress)

    def _check_budget(self, part: PartSource, failures: int, reason: str) -> None:
        if failures > self._max_retries:
            raise TransferError(f"file {part.id}: gave up after {failures} attempts: {reason}")

    async def _attempt(
        self,
        url: str,
        progress: _PartProgress,
        segment: SegmentWriter,
        on_size: ByteCallback,
        on_bytes: ByteCallback,
    ) -> None:
        headers = self._resume_headers(progress)
        try:
            async with (
                self._slots,
                self._session.get(
                    yarl.URL(url, encoded=True), headers=headers, allow_redirects=True
                ) as response,
            ):
                if await self._accept_response(response, progress, segment, on_size):
                    await self._stream_body(response, progress, segment, on_bytes)
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as error:
            raise _Retryable(type(error).__name__) from None
        if progress.total is not None and progress.written < progress.total:
            raise _Retryable(f"body ended at byte {progress.written} of {progress.total}")

    @staticmethod
    def _resume_headers(progress: _PartProgress) -> dict[str, str]:
        if progress.written == 0:
            return {}
        headers = {"Range": f"bytes={progress.written}-"}
        if progress.etag:
            headers["If-Range"] = progress.etag
        return headers

    async def _accept_response(
        self,
        response: aiohttp.ClientResponse,
        progress: _PartProgress,
        segment: SegmentWriter,
        on_size: ByteCallback,
    ) -> bool:
        """Check the answer; True when its body is the data to stream from `written` on."""
        status = response.status
        if status == 403:
            await self._raise_for_forbidden(response)
        if status >= 500 or status in (408, 429):
            raise _Retryable(f"storage host answered {status}")
        if status == 416 and progress.written and progress.written == progress.total:
            return False  # the cut came after the last byte: nothing is missing
        if status == 206 and self._continues_at(response, progress):
            return True
        if status not in (200, 206):
            raise TransferError(f"download answered HTTP {status}")
        if status == 206:
            # A 206 that does not continue where we stopped cannot be spliced in.
            raise _Retryable("ranged answer did not start at the resume offset")
        await self._start_over(response, progress, segment, on_size)
        return True

    async def _start_over(
        self,
        response: aiohttp.ClientResponse,
        progress: _PartProgress,
        segment: SegmentWriter,
        on_size: ByteCallback,
    ) -> None:
        """A 200: the whole body follows, from byte 0."""
        total = response.content_length
        if progress.total is not None and total is not None and total != progress.total:
            raise IntegrityError(
                f"file changed size during the download ({progress.total} -> {total} bytes)"
            )
        if progress.written:
            await segment.rewind()
        progress.etag = response.headers.get("ETag")
        progress.md5_expected = plain_md5_etag(progress.etag) if self._verify_etag else None
        progress.restart()
        if total is not None and progress.total is None:
            progress.total = total
            on_size(total)

    @staticmethod
    def _continues_at(response: aiohttp.ClientResponse, progress: _PartProgress) -> bool:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != progress.written:
            return False
        return match.group(3) == "*" or progress.total in (None, int(match.group(3)))

    @staticmethod
    async def _raise_for_forbidden(response: aiohttp.ClientResponse) -> None:
        """A pre-signed URL refused: expired (the usual case) or otherwise spoilt.

        Either way the cure is a fresh URL, which the caller fetches (a bounded
        number of times).
        """
        body = (await response.text(errors="replace"))[:2000]
        code = re.search(r"<Code>([^<]+)</Code>", body)
        expired = "expired" in body.lower()
        reason = "expired" if expired else (code.group(1) if code else "HTTP 403")
        raise UrlExpired(f"download URL refused ({reason})")

    async def _stream_body(
        self,
        response: aiohttp.ClientResponse,
        progress: _PartProgress,
        segment: SegmentWriter,
        on_bytes: ByteCallback,
    ) -> None:
        """Gather network pieces into large chunks; write and hash chunk k while k+1 arrives.

        Large chunks mean few thread hand-offs per byte. When the body breaks off,
        what already arrived is still written, so the resume starts right after it.
        """
        pending: asyncio.Future[None] | None = None
        pieces: list[bytes] = []
        gathered = 0

        async def hand_off() -> None:
            nonlocal pending, gathered
            chunk = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            pieces.clear()
            gathered = 0
            if pending is not None:
                await pending
            self._check_not_too_long(progress, len(chunk))
            pending = asyncio.ensure_future(self._consume(chunk, progress, segment, on_bytes))

        try:
            async for piece in response.content.iter_any():
                pieces.append(piece)
                gathered += len(piece)
                if gathered >= self._chunk_size:
                    await hand_off()
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError):
            if pieces:
                await hand_off()  # keep what arrived before the break
            raise
        finally:
            if pending is not None:
                await pending
        if pieces:
            await hand_off()
            assert pending is not None
            await pending

    @staticmethod
    def _check_not_too_long(progress: _PartProgress, incoming: int) -> None:
        if progress.total is not None and progress.written + incoming > progress.total:
            raise IntegrityError(f"server sent more than the announced {progress.total} bytes")

    async def _consume(
        self, chunk: bytes, progress: _PartProgress, segment: SegmentWriter, on_bytes: ByteCallback
    ) -> None:
        loop = asyncio.get_running_loop()
        work = [
            segment.write(chunk),
            loop.run_in_executor(self._executor, progress.sha256.update, chunk),
        ]
        if progress.md5 is not None:
            work.append(loop.run_in_executor(self._executor, progress.md5.update, chunk))
        await asyncio.gather(*work)
        progress.written += len(chunk)
        on_bytes(len(chunk))

    @staticmethod
    def _verified(part: PartSource, progress: _PartProgress) -> PartResult:
        if progress.total is not None and progress.written != progress.total:
            raise IntegrityError(
                f"file {part.id}: got {progress.written} bytes, expected {progress.total}"
            )
        if progress.md5 is not None and progress.md5.hexdigest() != progress.md5_expected:
            raise IntegrityError(f"file {part.id}: MD5 does not match the ETag")
        return PartResult(
            id=part.id,
            name=part.name,
            size=progress.written,
            sha256=progress.sha256.hexdigest(),
            etag=progress.etag.strip('"') if progress.etag else None,
        )


class _Part:
    """One part of a multi-part join: where it starts, and when it is done."""

    def __init__(self) -> None:
        self.offset: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.result: asyncio.Future[PartResult] = asyncio.get_running_loop().create_future()


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
        slots = [_Part() for _ in parts]
        slots[0].offset.set_result(0)
        tasks = [
            asyncio.create_task(
                self._fetch_at_offset(upload, index, parts, slots, on_size, on_bytes)
            )
            for index in range(len(parts))
        ]
        try:
            whole_sha256 = await self._hash_in_order(upload, slots)
            results = [await task for task in tasks]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for slot in slots:  # the failure was raised through a task already
                if slot.result.done() and not slot.result.cancelled():
                    slot.result.exception()
        return JoinedResult(size=sum(r.size for r in results), sha256=whole_sha256, parts=results)

    async def _fetch_at_offset(
        self,
        upload: Upload,
        index: int,
        parts: Sequence[PartSource],
        slots: list[_Part],
        on_size: ByteCallback,
        on_bytes: ByteCallback,
    ) -> PartResult:
        slot = slots[index]
        try:
            offset = await slot.offset
            segment = await upload.open_segment(index, offset)

            reported = False

            def size_known(size: int) -> None:
                nonlocal reported
                if reported:
                    return
                reported = True
                on_size(size)
                if index + 1 < len(slots):
                    slots[index + 1].offset.set_result(offset + size)

            result = await self._downloader.fetch_part(
                parts[index], segment, on_size=size_known, on_bytes=on_bytes
            )
            size_known(result.size)  # a server without Content-Length: known only now
        except BaseException as error:
            if not slot.result.done():
                slot.result.set_exception(error)
            raise
        slot.result.set_result(result)
        return result

    async def _hash_in_order(self, upload: Upload, slots: list[_Part]) -> str:
        whole = hashlib.sha256()
        loop = asyncio.get_running_loop()
        for slot in slots:
            result = await slot.result
            offset = slot.offset.result()
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
        results: list[PartResult] = []
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

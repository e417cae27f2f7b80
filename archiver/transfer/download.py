"""One upstream file, downloaded: a fresh URL, streaming, hashing, resume.

A part is streamed from its pre-signed URL straight into a storage segment
(`archiver.transfer.join` lays the segments of a backup out in order). The body is
received in chunks (`archiver.transfer.receive`) and handed, uncopied, to
`archiver.transfer.chunks`, whose threads hash (sha256 always, MD5 only when the ETag is
a plain MD5) and write them while the next chunks arrive. A body that breaks off resumes with
`Range`; an expired URL is replaced by a fresh one.

Knows nothing of Cloud 66 or of the state: the caller hands it a way to get a
fresh URL for each part.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import aiohttp
import structlog
import yarl

from archiver.core.errors import IntegrityError, TransferError, UrlExpired
from archiver.core.net_errors import describe_connection_error
from archiver.core.retry import Retrier, RetriesExhausted, RetryPolicy
from archiver.core.stopping import StopSignal
from archiver.model.manifest import PartRecord
from archiver.storage.base import Piece, SegmentWriter
from archiver.transfer.chunks import ChunkSink, PartHashes
from archiver.transfer.etags import bare_etag, md5_from_etag
from archiver.transfer.receive import RECEIVER_CHUNKS, body_chunks

log = structlog.get_logger(__name__)

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
# Refresh a pre-signed URL before a resume when it expires within this margin:
# S3 checks expiry when a request starts, so a resume needs a URL that is still valid.
_URL_REFRESH_MARGIN_SECONDS = 30.0
# Bytes handed to the lanes but not yet hashed and written, shared by the parts
# downloading at once (each may hold at least two chunks): enough that the loop keeps
# receiving while the slowest lane catches up, whatever the concurrency, with a flat
# RSS. Measured with 4 downloads at once: 8 MiB each -> 104 MiB peak, 4 MiB -> 92.
IN_FLIGHT_BUDGET = 16 * 1024 * 1024

UrlSource = Callable[[], Awaitable[str]]
ByteCallback = Callable[[int], None]


@dataclass(frozen=True)
class PartSource:
    """One upstream file of a backup and how to get a fresh URL for it."""

    id: str
    name: str
    fresh_url: UrlSource


@dataclass(frozen=True)
class PartFacts:
    """What a part's first full answer says of it: enough to resume it in another process."""

    size: int | None
    etag: str | None
    md5: str | None  # the MD5 its bytes must have, when the ETag proved one


@dataclass(frozen=True)
class ResumePoint:
    """Where a part left by an earlier process resumes: its first `written` bytes are
    durable (and already fed to the hashes), and `facts` are what its answer said."""

    written: int
    facts: PartFacts


FactsCallback = Callable[[PartFacts], None]


class UpstreamChanged(IntegrityError):
    """Permanent for this upload: the file changed upstream since its first bytes came."""


@dataclass
class _PartProgress:
    """Mutable progress of one part's download."""

    hashes: PartHashes = field(default_factory=PartHashes)
    written: int = 0  # bytes handed to the sink: where a resume starts
    total: int | None = None
    etag: str | None = None
    md5_expected: str | None = None
    resumed: bool = False  # bytes from an earlier process: the part cannot start over
    on_facts: FactsCallback | None = None

    def restart(self) -> None:
        """Forget everything: the server sent the whole body again."""
        self.written = 0
        self.hashes.restart(md5=self.md5_expected is not None)


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


class _BrokenOff(Exception):
    """Internal: the download broke off in a way a resume can fix."""


class Downloader:
    """Streams parts into storage segments with resume, URL refresh and integrity checks."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        download_limit: asyncio.Semaphore,
        retry_policy: RetryPolicy,
        stop: StopSignal | None = None,
        chunk_size: int = 1024 * 1024,
        in_flight_budget: int = IN_FLIGHT_BUDGET,
        verify_etag: bool = True,
    ) -> None:
        self._session = session
        self._chunk_size = chunk_size
        self._in_flight_budget = in_flight_budget
        self._parts_downloading = 0
        self._verify_etag = verify_etag
        self._download_limit = download_limit
        self._retry_policy = retry_policy
        self._stop = stop or StopSignal()

    async def fetch_part(
        self,
        part: PartSource,
        segment: SegmentWriter,
        *,
        on_size: ByteCallback,
        on_bytes: ByteCallback,
        hashes: PartHashes | None = None,
        resume: ResumePoint | None = None,
        on_facts: FactsCallback | None = None,
    ) -> PartRecord:
        """Download one part into `segment`, resuming after cuts, expiry and resets.

        `hashes`: the digests to feed (a join passes the joined file's sha256 in
        them, and reads it back once the part is done); fresh ones by default.
        An attempt that brought new bytes resets the count of failures in a row,
        so only attempts without progress use up `retries`; the policy's time
        limit still ends a download that only trickles forward.
        """
        progress = _PartProgress(hashes or PartHashes())
        if resume is not None:
            progress.written, progress.resumed = resume.written, True
            progress.total, progress.etag = resume.facts.size, resume.facts.etag
            progress.md5_expected = resume.facts.md5
            if resume.facts.size is not None:
                on_size(resume.facts.size)
        progress.on_facts = on_facts
        sink = ChunkSink(segment, progress.hashes, max_in_flight=self._in_flight_share)
        self._parts_downloading += 1
        try:
            await self._download(part, progress, sink, on_size, on_bytes)
            await sink.drain()
        finally:
            self._parts_downloading -= 1
            await sink.close()
        await segment.close()
        return self._verified(part, progress)

    def _in_flight_share(self) -> int:
        """This part's share of the bytes in flight, asked at every hand-off.

        Less what its receiver may hold besides (`archiver.transfer.receive`): the budget is
        every byte received and not yet written.
        """
        share = self._in_flight_budget // max(1, self._parts_downloading)
        return max(2 * self._chunk_size, share - RECEIVER_CHUNKS * self._chunk_size)

    async def _download(
        self,
        part: PartSource,
        progress: _PartProgress,
        sink: ChunkSink,
        on_size: ByteCallback,
        on_bytes: ByteCallback,
    ) -> None:
        """Attempts until the whole body was handed to `sink`."""
        retrier = Retrier(self._retry_policy, stop=self._stop)
        url = await part.fresh_url()
        while True:
            furthest = progress.written
            try:
                await self._attempt(url, progress, sink, on_size, on_bytes)
                return
            except (UrlExpired, _BrokenOff) as problem:
                progressed = progress.written > furthest
                self._count_failure(retrier, part, str(problem), progressed)
                if isinstance(problem, UrlExpired):
                    url = await part.fresh_url()
                    continue
                self._log_resume(retrier, part, progress, str(problem))
                await retrier.sleep(retrier.backoff_delay())
                if url_expires_soon(url):
                    url = await part.fresh_url()

    @staticmethod
    def _count_failure(
        retrier: Retrier, part: PartSource, reason: str, progressed: bool
    ) -> None:
        try:
            retrier.failed(reason, progressed=progressed)
        except RetriesExhausted as exhausted:
            raise TransferError(f"file {part.id}: {exhausted}") from None

    @staticmethod
    def _log_resume(
        retrier: Retrier, part: PartSource, progress: _PartProgress, reason: str
    ) -> None:
        log.info(
            "download interrupted; resuming",
            part=part.id,
            at_byte=progress.written,
            of_bytes=progress.total,
            reason=reason,
            failures_without_progress=retrier.failures_in_a_row,
            retries_left=retrier.retries_left,
        )

    async def _attempt(
        self,
        url: str,
        progress: _PartProgress,
        sink: ChunkSink,
        on_size: ByteCallback,
        on_bytes: ByteCallback,
    ) -> None:
        headers = self._resume_headers(progress)
        try:
            async with (
                self._stop.holding(self._download_limit),
                self._session.get(
                    yarl.URL(url, encoded=True), headers=headers, allow_redirects=True
                ) as response,
            ):
                if await self._accept_response(response, progress, sink, on_size):
                    await self._stream_body(response, progress, sink, on_bytes)
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as error:
            raise _BrokenOff(describe_connection_error(error)) from None
        if progress.total is not None and progress.written < progress.total:
            raise _BrokenOff(f"body ended at byte {progress.written} of {progress.total}")

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
        sink: ChunkSink,
        on_size: ByteCallback,
    ) -> bool:
        """Check the answer; True when its body is the data to stream from `written` on."""
        status = response.status
        if status == 403:
            await self._raise_for_forbidden(response)
        if status >= 500 or status in (408, 429):
            raise _BrokenOff(f"storage host answered {status}")
        if status == 416 and progress.written and progress.written == progress.total:
            return False  # the cut came after the last byte: nothing is missing
        if status == 206 and self._continues_at(response, progress):
            return True
        if status not in (200, 206):
            raise TransferError(f"download answered HTTP {status}")
        if status == 206:
            # A 206 that does not continue where we stopped cannot be spliced in.
            raise _BrokenOff("ranged answer did not start at the resume offset")
        await self._start_over(response, progress, sink, on_size)
        return True

    async def _start_over(
        self,
        response: aiohttp.ClientResponse,
        progress: _PartProgress,
        sink: ChunkSink,
        on_size: ByteCallback,
    ) -> None:
        """A 200: the whole body follows, from byte 0."""
        if progress.resumed:
            raise UpstreamChanged(
                "the file changed upstream since its download began (its ETag no longer "
                "matches): it is archived afresh on the next pass"
            )
        total = response.content_length
        if progress.total is not None and total is not None and total != progress.total:
            raise IntegrityError(
                f"file changed size during the download ({progress.total} -> {total} bytes)"
            )
        if progress.written:
            await sink.rewind()
        progress.etag = response.headers.get("ETag")
        progress.md5_expected = self._md5_to_check(progress.etag, response.headers)
        progress.restart()
        if total is not None and progress.total is None:
            progress.total = total
            on_size(total)
        if progress.on_facts is not None:  # the ETag as sent: If-Range needs it quoted
            progress.on_facts(PartFacts(progress.total, progress.etag, progress.md5_expected))

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
        sink: ChunkSink,
        on_bytes: ByteCallback,
    ) -> None:
        """Hand the body over chunk by chunk (`archiver.transfer.receive`); the sink does the rest.

        When the body breaks off, what already arrived is handed over before the
        error is raised, so the resume starts right after it.
        """
        chunks = body_chunks(
            response, chunk_size=self._chunk_size, read_timeout=self._session.timeout.sock_read
        )
        async with contextlib.aclosing(chunks):
            async for pieces in chunks:
                size = sum(len(piece) for piece in pieces)
                await self._hand_off(pieces, size, progress, sink, on_bytes)

    @staticmethod
    async def _hand_off(
        pieces: list[Piece],
        size: int,
        progress: _PartProgress,
        sink: ChunkSink,
        on_bytes: ByteCallback,
    ) -> None:
        if progress.total is not None and progress.written + size > progress.total:
            raise IntegrityError(f"server sent more than the announced {progress.total} bytes")
        progress.written += size
        on_bytes(size)
        await sink.put(pieces, size)

    def _md5_to_check(self, etag: str | None, headers: Mapping[str, str]) -> str | None:
        """The MD5 the part's bytes must have, or None when there is none to check against
        (checking is off, or the ETag is not proven an MD5: see `archiver.transfer.etags`)."""
        return md5_from_etag(etag, headers) if self._verify_etag else None

    @staticmethod
    def _verified(part: PartSource, progress: _PartProgress) -> PartRecord:
        if progress.total is not None and progress.written != progress.total:
            raise IntegrityError(
                f"file {part.id}: got {progress.written} bytes, expected {progress.total}"
            )
        md5 = progress.hashes.md5
        if md5 is not None and md5.hexdigest() != progress.md5_expected:
            raise IntegrityError(f"file {part.id}: MD5 does not match the ETag")
        return PartRecord(
            id=part.id,
            name=part.name,
            size=progress.written,
            sha256=progress.hashes.sha256.hexdigest(),
            etag=bare_etag(progress.etag),
        )

"""One segment of a file, fetched to its last byte: ranged GETs, resumed after every cut.

Each attempt asks for the bytes from the segment's `position` to its end, so a
body cut mid-way goes on from its last byte, and a server that sends fewer bytes
than asked (a short 206) is asked for the rest. The retry layer's progress rule
holds per segment: an attempt that brought bytes resets its count of failures in
a row; the policy's time limit still ends a segment that only trickles. A refused
(expired) URL is replaced through the file's `FreshUrls`, which asks Cloud 66
once for every segment that found it expired. The file decides what an answer
means for it (`FileRules`): its first answer tells its size and ETag, a later
one that does not match makes the file start over.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import structlog
import yarl

from archiver.core.errors import IntegrityError, TransferError, UrlExpired
from archiver.core.net_errors import describe_connection_error
from archiver.core.retry import Retrier, RetriesExhausted, RetryPolicy
from archiver.core.stopping import StopSignal
from archiver.core.token_bucket import TokenBucket
from archiver.transfer.in_flight import Share
from archiver.transfer.range_request import (
    Answer,
    BrokenOff,
    Expected,
    Unsatisfiable,
    read_answer,
    request_headers,
)
from archiver.transfer.receive import body_chunks
from archiver.transfer.segments import Segment
from archiver.transfer.urls import FreshUrls, url_expires_soon

log = structlog.get_logger(__name__)

# What aiohttp may read of a body with its headers before the receiver takes over: up
# to twice its read_bufsize (64 KiB, see archiver.sync.runtime), then one more socket read
# (256 KiB). A GET takes that much room in the budget, and under a bandwidth limit pays
# for it, before it is sent.
FIRST_READ = 384 * 1024



class FileRules(Protocol):
    """What the file makes of its segments' answers (`archiver.transfer.part_fetch`)."""

    def check(self, segment: Segment, answer: Answer) -> None:
        """Called with each answer before its body is taken; raises to refuse it."""

    def unsatisfiable(self, segment: Segment, total: int | None) -> bool:
        """A 416 (`total`: the size it named): True when the segment is complete so."""


@dataclass(frozen=True)
class Connection:
    """What every GET of every download shares: the session and how to read a body."""

    session: aiohttp.ClientSession
    chunk_size: int
    retry_policy: RetryPolicy
    stop: StopSignal
    throttle: TokenBucket | None = None


@dataclass
class SegmentRequest:
    """How this segment's GETs are made: ranged or not, and what the file is."""

    ranged: bool
    expected: Expected | None  # None until the file's first answer came
    file_id: str


class SegmentFetch:
    """Fetches one segment into itself (`Segment.put`) until it is complete."""

    def __init__(
        self,
        connection: Connection,
        urls: FreshUrls,
        segment: Segment,
        request: SegmentRequest,
        rules: FileRules,
    ) -> None:
        self._connection = connection
        self._urls = urls
        self._segment = segment
        self._request = request
        self._rules = rules

    async def run(self) -> None:
        """Attempts until every byte of the segment arrived; `segment.finish()` then."""
        segment = self._segment
        retrier = Retrier(self._connection.retry_policy, stop=self._connection.stop)
        url = await self._urls.current()
        while True:
            furthest = segment.position
            try:
                if await self._attempt(url):
                    segment.finish()
                    return
                raise BrokenOff("the server sent fewer bytes than asked")
            except UrlExpired as problem:
                self._count_failure(retrier, str(problem), segment.position > furthest)
                url = await self._urls.replace(url)
            except Unsatisfiable as problem:
                if self._rules.unsatisfiable(segment, problem.total):
                    segment.finish()
                    return
                last = "" if segment.span.end is None else segment.span.end - 1
                self._count_failure(
                    retrier, f"{problem} for bytes {segment.position}-{last}", progressed=False
                )
                await retrier.sleep(retrier.backoff_delay())
            except BrokenOff as problem:
                self._count_failure(retrier, str(problem), segment.position > furthest)
                self._log_resume(retrier, str(problem))
                await retrier.sleep(retrier.backoff_delay())
                if url_expires_soon(url):  # S3 checks expiry when a request starts
                    url = await self._urls.replace(url)

    def _count_failure(self, retrier: Retrier, reason: str, progressed: bool) -> None:
        try:
            retrier.failed(reason, progressed=progressed)
        except RetriesExhausted as exhausted:
            raise TransferError(f"file {self._request.file_id}: {exhausted}") from None

    def _log_resume(self, retrier: Retrier, reason: str) -> None:
        segment = self._segment
        log.info(
            "download interrupted; resuming",
            part=self._request.file_id,
            at_byte=segment.position,
            segment_end=segment.span.end,
            reason=reason,
            failures_without_progress=retrier.failures_in_a_row,
            retries_left=retrier.retries_left,
        )

    async def _attempt(self, url: str) -> bool:
        """One GET from the segment's position; True once the segment is complete."""
        segment, request = self._segment, self._request
        headers = request_headers(
            segment.position,
            segment.span.end,
            ranged=request.ranged or segment.position > 0,
            etag=request.expected.etag if request.expected else None,
        )
        session, throttle = self._connection.session, self._connection.throttle
        reserved = await self._reserve()
        prepaid = await self._prepay()
        try:
            async with session.get(
                yarl.URL(url, encoded=True), headers=headers, allow_redirects=True
            ) as response:
                answer = await read_answer(
                    response,
                    start=segment.position,
                    end=segment.span.end,
                    expected=request.expected,
                )
                self._rules.check(segment, answer)
                paid, room = prepaid, reserved
                prepaid = reserved = 0  # the body settles them
                await self._stream(response, answer, paid, room)
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as error:
            raise BrokenOff(describe_connection_error(error)) from None
        finally:
            if throttle is not None:
                throttle.refund(prepaid)
            _release(segment.share, reserved)
        left = segment.left
        return left == 0 if left is not None else True

    def _first_read(self) -> int:
        """The most the GET's first read (with the headers) may bring of this segment."""
        left = self._segment.left
        first = max(FIRST_READ, self._connection.chunk_size)
        return first if left is None else max(1, min(first, left))

    async def _reserve(self) -> int:
        """Room for what the GET's first read may bring, before the GET is sent: a segment
        that has to wait for room opens no connection meanwhile."""
        share = self._segment.share
        if share is None:
            return 0
        room = self._first_read()
        await share.reserve(room)
        return room

    async def _prepay(self) -> int:
        """Under a bandwidth limit, pay for what the GET's first read may take."""
        throttle = self._connection.throttle
        if throttle is None:
            return 0
        return await throttle.prepay(min(FIRST_READ, self._first_read()))

    async def _stream(
        self, response: aiohttp.ClientResponse, answer: Answer, prepaid: int, reserved: int
    ) -> None:
        """Hand the body to the segment chunk by chunk, as it arrives.

        When the body breaks off, what already arrived is kept before the error is
        raised, so the next attempt starts right after it.
        """
        segment, connection = self._segment, self._connection
        end = answer.end
        chunks = body_chunks(
            response,
            chunk_size=connection.chunk_size,
            read_timeout=connection.session.timeout.sock_read,
            share=segment.share,
            throttle=connection.throttle,
            prepaid=prepaid,
            reserved=reserved,
        )
        async with contextlib.aclosing(chunks):
            async for pieces in chunks:
                size = sum(len(piece) for piece in pieces)
                if end is not None and segment.position + size > end:
                    _release(segment.share, size)
                    raise IntegrityError(f"the server sent more than the {end} bytes it announced")
                segment.put(pieces, size)
        if end is not None and segment.position < end:
            raise BrokenOff(f"the body ended at byte {segment.position} of {end}")


def _release(share: Share | None, size: int) -> None:
    if share is not None:
        share.release(size)

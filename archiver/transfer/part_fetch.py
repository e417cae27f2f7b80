"""One file of a backup, fetched as consecutive Range segments over up to `streams` connections.

The first GET asks for the first `segment_size` bytes (with one stream: the whole
file, no Range). Its answer tells the file's size and ETag (`PartFacts`); the rest
of the file is cut into segments, and up to `streams` workers fetch them, each
taking the next segment in order once the backup's `Window` lets it start. The
writer takes the segments in order (`chunks`), so storage sees one sequential
stream whatever the number of connections.

What an answer means for the file (`FileRules`):
- every GET after the first carries `If-Match` with the first answer's ETag; a
  412, or a 206 with another ETag or size, means the file changed: it starts
  over from its first byte (a fresh first answer, the writer rewinds);
- a 200 to the first GET (a server that ignores Range) is the whole file: one
  stream; a 200 to any later GET makes the file start over with one stream;
- a 416 is the end of the file only where the file ends there (an empty file,
  or a resume after its last byte); anywhere else it is an error.
A file resumed from the bytes an earlier process kept cannot start over here:
those bytes are in storage already, so a change fails it (`UpstreamChanged`),
and the next pass archives it afresh. Restarts count as failures without
progress for the file, so a file that keeps changing is given up on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog

from archiver.core.errors import TransferError
from archiver.core.retry import Retrier, RetriesExhausted
from archiver.transfer.etags import md5_from_etag
from archiver.transfer.in_flight import InFlight
from archiver.transfer.part_source import PartFacts, PartSource, UpstreamChanged
from archiver.transfer.range_request import Answer, Expected, ObjectChanged
from archiver.transfer.segment_fetch import Connection, SegmentFetch, SegmentRequest
from archiver.transfer.segments import Chunk, Segment, Span, Window, plan
from archiver.transfer.urls import FreshUrls
from archiver.transfer.writer_pace import WAITING, WORKING

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class FetchSettings:
    """How every file is fetched: connections, budget, streams and segments."""

    connection: Connection
    budget: InFlight | None
    streams: int
    segment_size: int
    verify_etag: bool


class FileRestarted(Exception):
    """The file starts over from its first byte: what the writer took of it is void."""


class _Restart(Exception):
    """Internal: start the file over (with one stream, when Range cannot be trusted)."""

    def __init__(self, reason: str, *, one_stream: bool) -> None:
        super().__init__(reason)
        self.one_stream = one_stream


class PartFetch:
    """Fetches one file into ordered segments; the writer reads them with `chunks`."""

    def __init__(
        self,
        settings: FetchSettings,
        source: PartSource,
        *,
        start: int = 0,
        known: PartFacts | None = None,
        base: int = 0,
        window: Window | None = None,
    ) -> None:
        self.source = source
        self._settings = settings
        self._start = start  # bytes before it are in storage already (a resume)
        self._known = known  # what the earlier process recorded of the file
        self._base = base  # where byte 0 of this file is in the joined backup
        self._window = window
        self._urls = FreshUrls(source.fresh_url)
        self._streams = settings.streams
        self._restarts = Retrier(settings.connection.retry_policy, stop=settings.connection.stop)
        self.generation = 0
        self._facts: asyncio.Future[PartFacts] = asyncio.get_running_loop().create_future()
        self._facts.add_done_callback(_retrieve)
        self._request = self._first_request()
        self._segments: list[Segment] = []
        self._next = 0  # the next segment a worker takes
        self._workers: set[asyncio.Task[None]] = set()
        self._worker_ended = asyncio.Event()
        self._worker_error: BaseException | None = None
        self._failure: BaseException | None = None
        self._received = asyncio.Event()

    @property
    def resumed(self) -> bool:
        """Whether bytes of this file are in storage from an earlier process."""
        return self._start > 0

    # -- the writer's side

    async def facts(self) -> PartFacts:
        """What the first answer of the file (as it is now) said of it."""
        return await asyncio.shield(self._facts)

    async def writer_facts(self) -> PartFacts:
        """`facts`, for the writer: the file's first segment is its head from now on (the
        writer waits on its answer, which may not wait for room behind segments ahead)."""
        if self._segments:
            self._segments[0].make_head()
        return await self.facts()

    async def size(self) -> int:
        """The file's size: from its first answer, or once it all arrived (a chunked 200)."""
        facts = await self.facts()
        if facts.size is not None:
            return facts.size
        await self._received.wait()
        return self._segments[-1].position if self._segments else 0

    async def chunks(self) -> AsyncIterator[Chunk]:
        """The file's bytes (from `start`) in order; raises `FileRestarted` when it starts over."""
        generation = self.generation
        await self.writer_facts()
        index = 0
        while True:
            if generation != self.generation:
                raise FileRestarted("the file starts over")
            if index >= len(self._segments):
                return
            segment = self._segments[index]
            segment.make_head()
            while (chunk := await self._next_chunk(segment)) is not None:
                yield chunk
            segment.taken()
            index += 1

    async def _next_chunk(self, segment: Segment) -> Chunk | None:
        """The head's next chunk; while the writer waits for it, its pace says so."""
        window = self._window
        if window is None or segment.ready:
            return await segment.get()
        window.pace.enter(WAITING)
        try:
            return await segment.get()
        finally:
            window.pace.enter(WORKING)

    # -- fetching

    async def run(self) -> None:
        """Fetch every segment; returns once all arrived (the writer may still be taking them)."""
        try:
            while True:
                try:
                    await self._one_generation()
                    break
                except _Restart as restart:
                    self._start_over(restart)
            self._received.set()
        except BaseException as error:
            self.fail(error)
            raise
        finally:
            self._urls.close()

    def fail(self, error: BaseException) -> None:
        """Every wait of the writer on this file raises `error` (the first one given)."""
        if self._failure is None:
            self._failure = error
        if not self._facts.done():
            self._facts.set_exception(error)
        for segment in self._segments:
            segment.fail(error)

    def drop(self) -> None:
        """Let go of every byte held (the backup is done with, one way or another)."""
        for segment in self._segments:
            segment.drop()

    def _first_request(self) -> SegmentRequest:
        known = self._known if self.resumed else None
        expected = Expected(known.size, known.etag) if known is not None else None
        return SegmentRequest(ranged=self._streams > 1, expected=expected, file_id=self.source.id)

    def _first_span(self) -> Span:
        start = self._start if self.resumed else 0
        size = self._known.size if self._known is not None and self.resumed else None
        if self._streams == 1:
            return Span(start, size)
        end = start + self._settings.segment_size
        return Span(start, end if size is None else min(end, size))

    async def _one_generation(self) -> None:
        span = self._first_span()
        first = Segment(span, self._settings.budget, self._base + span.start, self._window)
        first.started = True
        self._segments, self._next = [first], 1
        self._spawn(first)
        await self._supervise()

    def _spawn(self, segment: Segment | None) -> None:
        self._workers.add(asyncio.create_task(self._worker(segment)))

    async def _worker(self, first: Segment | None) -> None:
        """Fetch `first` (or the next segment in order), then the next, until none is left."""
        connection = self._settings.connection
        try:
            segment = first if first is not None else await self._take_next()
            while segment is not None:
                try:
                    await SegmentFetch(connection, self._urls, segment, self._request, self).run()
                except ObjectChanged as change:
                    self._changed(str(change), one_stream=False)
                segment = await self._take_next()
        except BaseException as error:
            if self._worker_error is None:
                self._worker_error = error
            raise
        finally:
            self._worker_ended.set()

    async def _take_next(self) -> Segment | None:
        """The next segment in order, once the window lets its GET start."""
        if self._next >= len(self._segments):
            return None
        segment = self._segments[self._next]
        self._next += 1
        segment.started = True
        if self._window is not None:
            await self._window.admit(self._base + segment.span.start)
        return segment

    async def _supervise(self) -> None:
        """Until every worker is done; the first failure ends the others."""
        try:
            while True:
                await self._worker_ended.wait()
                self._worker_ended.clear()
                if self._worker_error is not None:
                    raise self._worker_error
                if all(worker.done() for worker in self._workers):
                    return
        finally:
            for worker in self._workers:
                worker.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._workers.clear()
            self._worker_error = None

    def _start_over(self, restart: _Restart) -> None:
        """Void this generation of the file and begin the next one."""
        try:
            self._restarts.failed(str(restart))  # never progress
        except RetriesExhausted as exhausted:
            raise TransferError(f"file {self.source.id}: {exhausted}") from None
        log.info("file starts over", part=self.source.id, reason=str(restart),
                 one_stream=restart.one_stream or self._streams == 1)
        if restart.one_stream:
            self._streams = 1
        if self._facts.done():
            self._facts = asyncio.get_running_loop().create_future()
            self._facts.add_done_callback(_retrieve)
        self._request = self._first_request()
        self.generation += 1
        stale, self._segments = self._segments, []
        for segment in stale:
            segment.fail(FileRestarted(str(restart)))

    # -- FileRules: what each answer means for the file

    def check(self, segment: Segment, answer: Answer) -> None:
        """Accept the first answer (the file's facts and plan); hold later ones to it."""
        if not self._facts.done():
            self._accept_first(segment, answer)
        elif not answer.ranged:
            self._changed("the server ignored Range (answered 200)", one_stream=True)

    def unsatisfiable(self, segment: Segment, total: int | None) -> bool:
        """416: the end of the file only where the file ends (an empty file, a resume
        after its last byte); anywhere else the server has bytes it does not send."""
        if total is None or segment.position != total:
            return False
        if not self._facts.done():
            known = self._known if self.resumed else None
            if known is not None and known.size != total:
                return False
            segment.span = Span(segment.span.start, total)
            self._settle(segment, known or PartFacts(total, None, None), [])
            return True
        return self._facts.result().size in (None, total)

    def _accept_first(self, segment: Segment, answer: Answer) -> None:
        if not answer.ranged:
            if self.resumed:
                self._changed("the server answered with the whole file", one_stream=True)
            segment.span = Span(0, answer.total)
            self._settle(segment, self._facts_from(answer, answer.total), [])
            return
        total = answer.total
        if total is None and self.resumed and self._known is not None:
            total = self._known.size
        if total is None:
            if self._streams > 1:
                raise _Restart("the ranged answer does not tell the file's size", one_stream=True)
            self._settle(segment, self._facts_from(answer, None), [])
            return
        end = total if segment.span.end is None else min(segment.span.end, total)
        segment.span = Span(segment.span.start, end)
        rest = plan(end, total, self._settings.segment_size) if self._streams > 1 else []
        self._settle(segment, self._facts_from(answer, total), rest)

    def _facts_from(self, answer: Answer, total: int | None) -> PartFacts:
        if self._known is not None and self.resumed:
            return PartFacts(total, self._known.etag, self._known.md5)
        md5 = md5_from_etag(answer.etag, answer.headers) if self._settings.verify_etag else None
        return PartFacts(total, answer.etag, md5)

    def _settle(self, first: Segment, facts: PartFacts, rest: list[Span]) -> None:
        """The file's facts are known: plan its other segments and start their workers."""
        self._request.expected = Expected(facts.size, facts.etag)
        budget = self._settings.budget
        self._segments = [
            first, *(Segment(span, budget, self._base + span.start, self._window) for span in rest)
        ]
        self._facts.set_result(facts)
        for _ in range(min(self._streams - 1, len(rest))):
            self._spawn(None)

    def _changed(self, reason: str, *, one_stream: bool) -> None:
        if self.resumed:
            raise UpstreamChanged(
                f"file {self.source.id}: {reason} since its download began: "
                "it is archived afresh on the next pass"
            )
        raise _Restart(reason, one_stream=one_stream)


def _retrieve(future: asyncio.Future[PartFacts]) -> None:
    """Mark a failed facts future's error as seen (the writer may never ask for it)."""
    if not future.cancelled():
        future.exception()

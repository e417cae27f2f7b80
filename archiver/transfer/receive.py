"""A response body received in chunks, straight into chunk buffers when it can be.

aiohttp hands a body over read by read: for each read of up to 256 KiB it
allocates a buffer, its parser copies the body out of it into another, it
re-arms the read timeout (a call_later and a cancel) and wakes the reader. On
1 GiB that kept the event loop busy for about 0.8 CPU-s, twice a bare receive
loop, on a machine whose two cores the hashing threads need.

So once aiohttp has parsed the headers of a plain fixed-length body
(Content-Length, no Transfer-Encoding), `body_chunks` takes the connection's
transport over with a `BufferedProtocol` that receives into chunk-sized
buffers (the kernel's copy is the only one) and hands each one out when it is
full. Two things aiohttp did per read are done per period instead: the read
timeout is one timer that checks when data last came, and a chunk whose first
byte has waited `FLUSH_AFTER_SECONDS` goes out part-full, so a slow body still
reaches storage as it arrives. Reading pauses (and the read timeout with it)
while the consumer falls behind, while the in-flight budget has no room for the
next chunk (`archiver.transfer.in_flight`: the room is taken before a chunk is received)
and while the bandwidth throttle is in debt (`archiver.core.token_bucket`): each
pause holds the sender back through TCP. A body that came whole hands its
connection back to aiohttp's pool (kept alive for the next segment); one that
did not is closed.

The takeover leans on names aiohttp does not publish: `ResponseHandler` (the
protocol's type), `Connection.protocol` and `.transport`, a `pause_reading()`
that also cancels the protocol's read timer (`_read_timeout_handle`, via
`_drop_timeout`), a `Connection.close()` that drops the connection instead
of pooling it (not so on a proxy tunnel's placeholder), and, to hand a whole
body's connection back, the protocol's `resume_reading()` and the end of the
body fed to the response's stream (`feed_eof`). So before each takeover
`library_blocker` and `_connection_blocker` check them: the aiohttp version
against the minor versions this was tested on (`TESTED_AIOHTTP`, matching the
cap in pyproject.toml), the classes and each attribute used, and after
pausing, that the timer is really gone. When any check fails, the body is
read through aiohttp's public API instead, and that is logged once per
reason. `C66_ARCHIVER_PUBLIC_RECEIVE=1` asks for the public path outright (the
benchmark's comparison, and a way out should the takeover ever misbehave).

Any other body (chunked, no length) is read through aiohttp, its pieces
gathered into chunks the same way. Either way a body that breaks off yields
what arrived before the error is raised (`aiohttp.ClientPayloadError`, or
`TimeoutError` after `read_timeout` seconds without data), so a resume can
start right after it.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
from collections import deque
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
import structlog

from archiver.core.token_bucket import TokenBucket
from archiver.storage.base import Piece
from archiver.transfer.in_flight import Share

log = structlog.get_logger(__name__)

# [from, to): the aiohttp minor versions the takeover was tested on (pyproject's cap).
TESTED_AIOHTTP = ((3, 14), (3, 15))
PUBLIC_RECEIVE_ENV = "C66_ARCHIVER_PUBLIC_RECEIVE"
# What the takeover uses of aiohttp's internals, checked before it is relied upon.
_PROTOCOL_ATTRIBUTES = ("pause_reading", "resume_reading", "_drop_timeout")
_CONNECTION_ATTRIBUTES = ("protocol", "transport", "close")
_TRANSPORT_METHODS = ("set_protocol", "pause_reading", "resume_reading", "close")

# A chunk that fills slowly is handed out anyway once its first byte waited this long.
FLUSH_AFTER_SECONDS = 0.5
# Full chunks waiting for the consumer before reading pauses.
_READY_LIMIT = 2


async def body_chunks(
    response: aiohttp.ClientResponse,
    *,
    chunk_size: int,
    read_timeout: float | None,
    share: Share | None = None,
    throttle: TokenBucket | None = None,
    prepaid: int = 0,
    reserved: int = 0,
) -> AsyncGenerator[list[Piece], None]:
    """The body of `response` in chunks of about `chunk_size` bytes (lists of pieces).

    With a `share` of the in-flight budget, each chunk's room is taken from it before
    the chunk is received, and the consumer gives it back (`Share.release`) once the
    chunk is written; without room, reading stops. With a `throttle`, reading keeps to
    its rate. `prepaid` bytes of the throttle and `reserved` bytes of the share were
    taken before the request, for what aiohttp reads with the headers (the first
    chunk's room; without it, it is taken here). Use with `contextlib.aclosing`, so
    the connection is released as soon as the caller stops.
    """
    plain = _plain_body(response)
    if plain is None or not _paused_for_takeover(plain[2]):
        if throttle is not None:
            throttle.refund(prepaid)
        if share is not None:
            share.release(reserved)
        async for pieces in _through_aiohttp(response, chunk_size, share, throttle):
            yield pieces
        return
    size, transport, protocol = plain
    if share is not None and not reserved:
        reserved = min(chunk_size, size)
        await share.reserve(reserved)  # room for the first chunk, before any byte is taken
    if share is not None and reserved > size:
        share.release(reserved - size)
        reserved = size
    reserved = reserved or min(chunk_size, size)
    first = response.content.read_nowait(-1)  # what aiohttp received with the headers
    if throttle is not None:  # paid before the request; the rest is refunded or charged
        throttle.refund(prepaid - len(first))
        throttle.charge(max(0, len(first) - prepaid))
    if len(first) >= size:
        if share is not None:
            share.force(len(first))
            share.release(reserved)
        if first:
            yield [first]
        return
    receiver = _Receiver(transport, size, chunk_size, read_timeout, share, throttle)
    transport.set_protocol(receiver)
    whole = False
    try:
        receiver.start(reserved, first)
        while (chunk := await receiver.next_chunk()) is not None:
            yield [chunk]
        whole = True
    finally:
        receiver.stop()
        if whole:
            _hand_back(transport, protocol, response)
        else:
            response.close()  # the connection carries our protocol: it goes, never to the pool


def _hand_back(
    transport: asyncio.Transport, protocol: Any, response: aiohttp.ClientResponse
) -> None:
    """The body came whole (and not a byte more was read): the connection goes back to
    aiohttp's pool for the next GET, as if aiohttp had read the body itself. Segments of
    one file follow each other on a kept connection, not a new TCP and TLS handshake each.

    aiohttp's protocol takes the transport back, reading again; the end of the body is
    then what aiohttp's parser would have signalled: it drops the read timeout and
    releases the connection (the next request gives the protocol a fresh parser).
    """
    transport.set_protocol(protocol)
    protocol.resume_reading()
    response.content.feed_eof()


def _plain_body(response: aiohttp.ClientResponse) -> tuple[int, asyncio.Transport, Any] | None:
    """Length, transport and aiohttp protocol of a body whose transport can be taken over."""
    if response.content_length is None or "Transfer-Encoding" in response.headers:
        return None  # not fixed-length: aiohttp's parser must read it
    blocker = library_blocker()
    if blocker is not None:
        _report_fallback(blocker)
        return None
    connection = response.connection
    if connection is None or connection.protocol is None:
        return None  # nothing left to read on it (the body came with the headers)
    blocker = _connection_blocker(connection)
    if blocker is not None:
        _report_fallback(blocker)
        return None
    transport = connection.transport
    assert isinstance(transport, asyncio.Transport)  # checked by _connection_blocker
    return response.content_length, transport, connection.protocol


@functools.cache
def library_blocker() -> str | None:
    """Why this aiohttp cannot be taken over, or None; the checks that hold for every body."""
    if os.environ.get(PUBLIC_RECEIVE_ENV) == "1":
        return f"{PUBLIC_RECEIVE_ENV}=1"
    version = _minor_version(aiohttp.__version__)
    low, high = TESTED_AIOHTTP
    if version is None or not low <= version < high:
        tested = f"{low[0]}.{low[1]}.x" if (low[0], low[1] + 1) == high else f"{low} to {high}"
        return f"aiohttp {aiohttp.__version__} is not the {tested} the takeover was tested on"
    try:
        from aiohttp.client_proto import ResponseHandler
        from aiohttp.connector import Connection
    except ImportError as error:
        return f"aiohttp has no {error.name or error}"
    for owner, names in (
        (ResponseHandler, _PROTOCOL_ATTRIBUTES),
        (aiohttp.StreamReader, ("feed_eof",)),
        (Connection, _CONNECTION_ATTRIBUTES),
        (asyncio.Transport, _TRANSPORT_METHODS),
    ):
        missing = [name for name in names if not hasattr(owner, name)]
        if missing:
            return f"{owner.__qualname__} has no {', '.join(missing)}"
    return None


def _connection_blocker(connection: Any) -> str | None:
    """Why this response's connection cannot be taken over (types, per-instance state)."""
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.connector import Connection

    if type(connection) is not Connection:  # a subclass may pool or keep it on close()
        return f"the connection is a {type(connection).__qualname__}"
    if not isinstance(connection.protocol, ResponseHandler):
        return f"the protocol is a {type(connection.protocol).__qualname__}"
    if not hasattr(connection.protocol, "_read_timeout_handle"):
        return "ResponseHandler has no _read_timeout_handle"
    if not isinstance(connection.transport, asyncio.Transport):
        return f"the transport is a {type(connection.transport).__qualname__}"
    return None


def _paused_for_takeover(protocol: Any) -> bool:
    """Pause aiohttp's reading; True once its read timer is gone too (else reading resumes)."""
    protocol.pause_reading()  # stops its reads and, through _drop_timeout, its read timer
    if protocol._read_timeout_handle is None:
        return True
    protocol.resume_reading()
    _report_fallback("ResponseHandler.pause_reading() left the read timer armed")
    return False


def _minor_version(text: str) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2])) if match else None


_reported: set[str] = set()


def _report_fallback(reason: str) -> None:
    """Say once per reason that bodies go through aiohttp's public path, and why."""
    if reason not in _reported:
        _reported.add(reason)
        log.warning(
            "receiving bodies through aiohttp's public API (slower)",
            reason=reason,
            aiohttp_version=aiohttp.__version__,
        )


class _Receiver(asyncio.BufferedProtocol):
    """Receives `size` bytes into chunk buffers; `ready` holds the filled ones.

    It reads only while three things allow it: the consumer (fewer than
    `_READY_LIMIT` chunks waiting), the budget (a buffer to read into: each is
    granted by the share before it is allocated) and the throttle (out of debt).
    """

    def __init__(
        self,
        transport: asyncio.Transport,
        size: int,
        chunk_size: int,
        timeout: float | None,
        share: Share | None,
        throttle: TokenBucket | None,
    ) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self.left = size  # bytes still to receive
        self._chunk_size = chunk_size
        self._share = share
        self._throttle = throttle
        self._read_limit = size if throttle is None else throttle.quantum
        # The chunk filling; made when reading needs it (`_filling`), so a paused receiver
        # holds none, though its room may be granted already.
        self._buffer: bytearray | None = None
        self._reserved = 0  # the room the share granted for the current chunk
        self._asked = 0  # the size of a chunk the share has yet to grant
        self._filled = 0
        self._first_at = 0.0
        self.ready: deque[memoryview] = deque()
        self.ended: BaseException | None = None  # why no more bytes will come
        self._waiter: asyncio.Future[None] | None = None
        self._paused = True  # until reading is allowed: aiohttp paused the transport for us
        self._throttled: asyncio.TimerHandle | None = None
        self._timeout = timeout
        self._last_data = self._loop.time()
        self._watch = None if timeout is None else self._loop.call_later(timeout, self._check)

    def start(self, reserved: int, first: bytes) -> None:
        """The first buffer (its room already taken), then the bytes aiohttp received
        before the takeover, in front of everything else."""
        self._use_buffer(reserved)
        view = memoryview(first)
        while view:
            if not self._reserved:  # `first` spans chunks: it is in memory already
                self._asked = 0
                if self._share is not None:
                    self._share.withdraw()
                self._force_buffer()
            buffer = self._filling()
            count = min(len(view), len(buffer) - self._filled)
            buffer[self._filled : self._filled + count] = view[:count]
            self._arrived(count)  # (the throttle was paid for `first` already)
            view = view[count:]
        if self._throttle is not None and (delay := self._throttle.delay()) > 0:
            self._throttle_for(delay)

    # -- asyncio.BufferedProtocol

    def get_buffer(self, sizehint: int) -> memoryview:
        """The free end of the current chunk (never more than the body has left, nor more
        than one throttled read)."""
        del sizehint
        assert self._reserved  # reading is paused while no chunk's room is granted
        return memoryview(self._filling())[self._filled : self._filled + self._read_limit]

    def buffer_updated(self, nbytes: int) -> None:
        """`nbytes` more arrived in the current chunk: pay the throttle, then take them."""
        if self._throttle is not None:
            delay = self._throttle.charge(nbytes)
            if delay > 0:
                self._throttle_for(delay)
        self._arrived(nbytes)

    def _arrived(self, nbytes: int) -> None:
        """`nbytes` more in the current chunk; hand it out when full or old."""
        now = self._loop.time()
        self._last_data = now
        if not self._filled:
            self._first_at = now
        self._filled += nbytes
        self.left -= nbytes
        if self._filled == self._reserved or now - self._first_at >= FLUSH_AFTER_SECONDS:
            self._hand_out()

    def eof_received(self) -> bool:
        """The peer finished sending: let the transport close (connection_lost follows)."""
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: short of `size`, the body broke off."""
        if self.left and self.ended is None:
            self._end(aiohttp.ClientPayloadError(
                f"connection closed with {self.left} bytes of the body missing"
            ))

    # -- the consumer's side

    async def next_chunk(self) -> memoryview | None:
        """The next filled chunk, None at the end; raises once the body broke off."""
        while not self.ready:
            if self.ended is not None:
                raise self.ended
            if not self.left:
                return None
            self.resume()
            await self._wait()
        chunk = self.ready.popleft()
        self.resume()
        return chunk

    def resume(self) -> None:
        """Read again, if the consumer, the budget and the throttle all allow it."""
        if self._paused and self._may_read():
            self._paused = False
            self._last_data = self._loop.time()  # the silence counts from now
            self._transport.resume_reading()

    def _may_read(self) -> bool:
        return bool(
            self.left
            and self.ended is None
            and len(self.ready) < _READY_LIMIT
            and self._reserved
            and self._throttled is None
        )

    async def _wait(self) -> None:
        """Until a chunk is ready or the body ended."""
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def stop(self) -> None:
        """No more timers, and the room of every byte not handed to the consumer back."""
        self.stop_timers()
        if self._share is not None:
            if self._asked:
                self._share.withdraw()
                self._asked = 0
            dropped = self._reserved + sum(len(chunk) for chunk in self.ready)
            self._share.release(dropped)
        self._buffer, self._reserved = None, 0
        self.ready.clear()

    # -- internals

    def _hand_out(self) -> None:
        self.ready.append(memoryview(self._filling())[: self._filled])
        if self._share is not None and self._reserved > self._filled:
            self._share.release(self._reserved - self._filled)  # a short last or early chunk
        self._buffer, self._reserved, self._filled = None, 0, 0
        self._next_buffer()
        if not self._may_read():
            self._pause()
        self._wake()

    def _filling(self) -> bytearray:
        """The chunk being filled, made on first need: its room was granted before."""
        if self._buffer is None:
            self._buffer = bytearray(self._reserved)
        return self._buffer

    def _next_buffer(self) -> None:
        """Ask for the next chunk's room; reading waits until it is granted."""
        size = min(self._chunk_size, self.left)
        if not size or self.ended is not None:
            return
        if self._share is None or self._share.request(size, self._granted):
            self._use_buffer(size)
        else:
            self._asked = size

    def _granted(self) -> None:
        """The share granted the room asked for: read on."""
        size, self._asked = self._asked, 0
        if size and self.ended is None:
            self._use_buffer(size)
            self.resume()
        elif size and self._share is not None:
            self._share.release(size)

    def _use_buffer(self, size: int) -> None:
        """The next chunk may hold `size` bytes (its buffer is made when read into)."""
        self._buffer, self._reserved = None, size

    def _force_buffer(self) -> None:
        size = min(self._chunk_size, self.left)
        if self._share is not None:
            self._share.force(size)
        self._use_buffer(size)

    def _throttle_for(self, delay: float) -> None:
        self._pause()
        if self._throttled is None:
            self._throttled = self._loop.call_later(delay, self._throttle_over)

    def _throttle_over(self) -> None:
        self._throttled = None
        assert self._throttle is not None
        delay = self._throttle.delay()  # other readers may have taken what accrued
        if delay > 0:
            self._throttled = self._loop.call_later(delay, self._throttle_over)
        else:
            self.resume()

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            self._transport.pause_reading()

    def _end(self, reason: BaseException) -> None:
        self.ended = reason
        if self._filled:
            self._hand_out()  # what arrived before the break is kept
        self.stop_timers()
        self._wake()

    def stop_timers(self) -> None:
        """The read timeout and the throttle's pause end (the body is over)."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._throttled is not None:
            self._throttled.cancel()
            self._throttled = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _check(self) -> None:
        """The read timeout: one timer per period, not one per read."""
        self._watch = None
        if self.ended is not None or not self.left or self._timeout is None:
            return
        if self._paused:  # by us: the consumer is slow, not the peer (`resume` restarts it)
            self._watch = self._loop.call_later(self._timeout, self._check)
            return
        due = self._last_data + self._timeout
        if self._loop.time() < due:
            self._watch = self._loop.call_at(due, self._check)
            return
        self._end(TimeoutError(f"no data for {self._timeout:g} s"))
        self._transport.close()


async def _through_aiohttp(
    response: aiohttp.ClientResponse,
    chunk_size: int,
    share: Share | None,
    throttle: TokenBucket | None,
) -> AsyncGenerator[list[Piece], None]:
    """aiohttp's own reading, its pieces (as received: `iter_any` would join them) gathered.

    The room of each chunk is taken before its first piece is read (and corrected to
    what the chunk holds when it goes out); a piece that would overfill a chunk is split
    (a view, no copy), so no chunk holds more than its room. The throttle is paid piece
    by piece.
    """
    clock = asyncio.get_running_loop().time
    pieces: list[Piece] = []
    gathered = reserved = 0
    flush_at = 0.0

    def out() -> list[Piece]:
        nonlocal pieces, gathered, reserved
        if share is not None:
            share.force(gathered)
            share.release(reserved)
        handed, pieces, gathered, reserved = pieces, [], 0, 0
        return handed

    try:
        if share is not None:
            await share.reserve(chunk_size)
            reserved = chunk_size
        async for piece, _ in response.content.iter_chunks():
            if throttle is not None:
                await throttle.take(len(piece))
            rest: Piece = piece
            while rest:
                if not pieces:
                    flush_at = clock() + FLUSH_AFTER_SECONDS
                taken, rest = _split(rest, chunk_size - gathered)
                pieces.append(taken)
                gathered += len(taken)
                if gathered >= chunk_size or clock() >= flush_at:
                    yield out()
                    if share is not None:
                        await share.reserve(chunk_size)
                        reserved = chunk_size
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError):
        if gathered:
            yield out()  # what arrived before the break is kept
        raise
    finally:
        if share is not None and reserved:
            share.release(reserved)
    if gathered:
        yield out()


def _split(piece: Piece, room: int) -> tuple[Piece, Piece]:
    """The first `room` bytes of `piece` and the rest; `piece` itself when it fits."""
    if len(piece) <= room:
        return piece, b""
    view = memoryview(piece)
    return view[:room], view[room:]

"""One part's bytes, taken in order from its fetch, into its segment of the upload.

The writer is the only one that touches storage and the digests: it opens the
part's segment at the part's offset once the part's first answer came, hands the
chunks to `archiver.transfer.chunks` (hashed and written off the event loop, in order),
and checks the size and the MD5 at the end, exactly as for one stream. When the
file starts over (`FileRestarted`: it changed upstream, or its server stopped
honouring Range), what was written of it is rewound and hashed afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from archiver.core.errors import IntegrityError
from archiver.model.manifest import PartRecord
from archiver.storage.base import Upload
from archiver.transfer.chunks import ChunkSink, PartHashes
from archiver.transfer.etags import bare_etag
from archiver.transfer.part_fetch import FileRestarted, PartFetch
from archiver.transfer.part_source import ByteCallback, FactsCallback, PartFacts, ResumePoint
from archiver.transfer.segments import Window
from archiver.transfer.writer_pace import STORING, WORKING


@dataclass(frozen=True)
class WriteTarget:
    """Where a part goes: its upload, its index there, and its first byte's offset."""

    upload: Upload
    index: int
    offset: int
    window: Window
    max_in_flight: int  # what the sink may hand to its lanes at once


@dataclass
class PartProgress:
    """What the caller hears while a part is written."""

    on_size: ByteCallback
    on_bytes: ByteCallback
    on_facts: FactsCallback | None


async def write_part(
    fetch: PartFetch,
    target: WriteTarget,
    hashes: PartHashes,
    progress: PartProgress,
    resume: ResumePoint | None = None,
) -> PartRecord:
    """Write the part from `fetch` (after `resume.written` bytes already in storage)."""
    already = resume.written if resume is not None else 0
    facts = await _begin(fetch, hashes, progress, resumed=resume is not None)
    segment = await target.upload.open_segment(target.index, target.offset + already)
    sink = ChunkSink(segment, hashes, max_in_flight=target.max_in_flight)
    got = 0
    try:
        while True:
            try:
                got = await _take_all(fetch, sink, target.window, progress.on_bytes, got)
                break
            except FileRestarted:
                await sink.rewind()
                target.window.advance(-got)
                got = 0
                facts = await _begin(fetch, hashes, progress, resumed=False, again=True)
        await sink.drain()
    finally:
        await sink.close()
    await segment.close()
    return _verified(fetch, facts, hashes, already + got)


async def _begin(
    fetch: PartFetch,
    hashes: PartHashes,
    progress: PartProgress,
    *,
    resumed: bool,
    again: bool = False,
) -> PartFacts:
    """The part's facts, told to the caller; fresh digests unless it resumes."""
    facts = await fetch.writer_facts()
    if not resumed:  # (a resumed part's facts are recorded, its first bytes hashed already)
        hashes.restart(md5=facts.md5 is not None)
        if progress.on_facts is not None:
            progress.on_facts(facts)
    if facts.size is not None and not again:
        progress.on_size(facts.size)
    return facts


async def _take_all(
    fetch: PartFetch, sink: ChunkSink, window: Window, on_bytes: Callable[[int], None], got: int
) -> int:
    async for chunk in fetch.chunks():
        got += chunk.size
        window.advance(chunk.size)
        on_bytes(chunk.size)
        window.pace.enter(STORING)  # (storage, or the hashing threads, may hold it up)
        try:
            await sink.put(chunk.pieces, chunk.size, chunk.written)
        finally:
            window.pace.enter(WORKING)
    return got


def _verified(fetch: PartFetch, facts: PartFacts, hashes: PartHashes, size: int) -> PartRecord:
    part = fetch.source
    if facts.size is not None and size != facts.size:
        raise IntegrityError(f"file {part.id}: got {size} bytes, expected {facts.size}")
    md5 = hashes.md5
    if md5 is not None and md5.hexdigest() != facts.md5:
        raise IntegrityError(f"file {part.id}: MD5 does not match the ETag")
    return PartRecord(
        id=part.id,
        name=part.name,
        size=size,
        sha256=hashes.sha256.hexdigest(),
        etag=bare_etag(facts.etag),
    )

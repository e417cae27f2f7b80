"""One download, every destination: the same bytes written into several uploads at once.

`FanOut` stands where the join expects a storage (`start_upload`, `resume_upload`):
it opens one upload in each destination that needs the backup (an age-sealed one
where that destination encrypts, under `<name>.tar.age`) and hands the join a
`TeeUpload` over them. The join neither knows nor cares how many there are: it
writes segments in order, as for one storage, so this composes with whatever
feeds the upload (one stream, ranged segments, a copy from another destination).

- Every chunk goes to every destination's segment together and the write returns
  when all have taken it: the slowest destination sets the pace (back-pressure),
  and memory stays what one upload needs, however many destinations there are.
- A destination that fails (full, unreachable, refusing) is dropped from the tee
  with its error, its upload aborted at the end; the others go on and commit on
  their own. Only when none is left does the upload fail.
- Resuming after a restart: each destination reopens its own unfinished upload;
  the download resumes where the one with the fewest durable bytes stopped, and
  a destination that holds more skips the bytes it already has.
- Committing: every encrypting destination's age stream is finished first (its stored
  size and sha256 are then known); then every destination commits at once, each on its
  own: `before_commit` hears it just before its data reaches the final name (to record
  the commit, `archiver.transfer.commit`), and `after_commit` right after its commit
  (committed or failed), so its manifest follows its data at once instead of waiting for
  the slowest destination's commit: the data is final without its manifest only for the
  time one manifest write takes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from archiver.core.errors import StorageError
from archiver.core.secrets import redact
from archiver.model.layout import ENCRYPTED_SUFFIX
from archiver.storage.base import Piece, ResumedUpload, SegmentWriter, ThreadWritableSegment, Upload
from archiver.storage.destinations import Destination
from archiver.transfer.encryption import AgeEncryption
from archiver.transfer.sealed_upload import SealedUpload

log = structlog.get_logger(__name__)

# What a destination's trouble raises: it fails that destination, not the others.
DESTINATION_ERRORS = (StorageError, OSError)


@dataclass
class Member:
    """One destination's upload in a fan-out, and what became of it."""

    destination: Destination
    key: str
    upload: Upload | None = None
    error: BaseException | None = None
    committed: bool = False

    @property
    def live(self) -> bool:
        """Still taking bytes: opened and not failed."""
        return self.upload is not None and self.error is None

    @property
    def stored(self) -> tuple[int, str] | None:
        """(size, sha256) of the stored ciphertext, for an encrypted destination once its age
        stream is finished (just before its commit)."""
        if isinstance(self.upload, SealedUpload) and self.upload.stored_sha256:
            return self.upload.stored_size, self.upload.stored_sha256
        return None

    def fail(self, error: BaseException) -> None:
        """Drop this destination from the fan-out (the first error is the one reported)."""
        if self.error is None:
            self.error = error
            log.error("a destination failed; the others go on", storage=self.destination.name,
                      error=redact(str(error)))


def stored_key(destination: Destination, key: str) -> str:
    """The key a backup's data has in `destination`: `.tar.age` where it encrypts."""
    return key + ENCRYPTED_SUFFIX if destination.encrypted else key


class FanOut:
    """The destinations one backup goes to, as the one place the join writes to."""

    supports_read_back = False

    def __init__(
        self,
        destinations: Sequence[Destination],
        key: str,
        *,
        seal: bool = True,
        before_commit: Callable[[Member], None] | None = None,
        after_commit: AfterCommit | None = None,
        encryptions: Mapping[str, AgeEncryption] | None = None,
    ) -> None:
        """`key`: the backup's plaintext key. With `seal` (bytes in are plaintext), a destination
        that encrypts gets an age-sealed upload; without, the bytes in are stored as they are
        (a copy of another destination's stored bytes). `before_commit` hears each destination
        just before its data is committed (its stored size and sha256 known), `after_commit`
        right after its commit ended (`Member.committed` says how), before the commit counts
        as done: the place for its manifest. `encryptions`:
        each encrypting destination's engine by name (`Runtime.encryptions`); pyrage in
        this process for one not given."""
        if not destinations:
            raise ValueError("a fan-out needs at least one destination")
        self._seal = seal
        self._hooks = CommitHooks(before_commit, after_commit)
        self._encryptions = dict(encryptions or {})
        self.members = [Member(d, stored_key(d, key)) for d in destinations]

    @property
    def encrypted(self) -> bool:
        """True when some destination encrypts: then nothing is resumed after a restart."""
        return any(member.destination.encrypted for member in self.members)

    async def start_upload(self, key: str) -> Upload:
        """A fresh upload in every destination (`key` is the plaintext key every one derives its
        own from); a destination that cannot start one fails alone."""
        del key  # each member knows its key
        await asyncio.gather(*(self._start(member) for member in self.members))
        return self._joined()

    async def _start(self, member: Member) -> None:
        destination = member.destination
        try:
            upload = await destination.storage.start_upload(member.key)
        except DESTINATION_ERRORS as error:
            member.fail(error)
            return
        if self._seal and destination.encrypted:
            member.upload = SealedUpload(upload, self._encryption(destination))
        else:
            member.upload = upload

    def _encryption(self, destination: Destination) -> AgeEncryption:
        given = self._encryptions.get(destination.name)
        if given is not None:
            return given
        return AgeEncryption(destination.recipients, destination.recipient_texts)

    async def resume_upload(self, key: str) -> ResumedUpload | None:
        """Every destination's unfinished upload of `key`, continued from the smallest durable
        length; None (each left to be started afresh) unless every live one has one."""
        if self.encrypted:
            return None
        resumed = await asyncio.gather(*(self._resume(member) for member in self.members))
        found = [(member, r) for member, r in zip(self.members, resumed, strict=True) if r]
        live = [member for member in self.members if member.error is None]
        if not live or len(found) != len(live):
            await asyncio.gather(*(r.upload.suspend() for _, r in found))
            for member in self.members:
                member.upload = None
            return None
        durable = min(r.durable for _, r in found)
        for member, r in found:
            member.upload = r.upload if r.durable == durable else _AheadUpload(r.upload, r.durable)
        return ResumedUpload(self._joined(), durable)

    async def _resume(self, member: Member) -> ResumedUpload | None:
        try:
            return await member.destination.storage.resume_upload(member.key)
        except DESTINATION_ERRORS as error:
            member.fail(error)
            return None

    def _joined(self) -> Upload:
        live = [member for member in self.members if member.live]
        if not live:
            raise self._first_error()
        return TeeUpload(live, self._hooks)

    def _first_error(self) -> BaseException:
        errors = [member.error for member in self.members if member.error is not None]
        return errors[0] if errors else StorageError("no destination to write to")

    def failed(self) -> list[Member]:
        """The destinations that failed, each with its error."""
        return [member for member in self.members if member.error is not None]

    def committed(self) -> list[Member]:
        """The destinations that committed the backup."""
        return [member for member in self.members if member.committed]


# Hears one destination right after its commit ended (committed or failed).
AfterCommit = Callable[[Member], Awaitable[None]]


@dataclass(frozen=True)
class CommitHooks:
    """What hears each destination's commit: just before it, right after it."""

    before: Callable[[Member], None] | None = None
    after: AfterCommit | None = None


class TeeUpload:
    """The `Upload` protocol over several destinations' uploads, each failing on its own."""

    def __init__(self, members: Sequence[Member], hooks: CommitHooks | None = None) -> None:
        self._members = list(members)
        self._hooks = hooks or CommitHooks()

    def _live(self) -> list[Member]:
        live = [member for member in self._members if member.live]
        if not live:
            errors = [member.error for member in self._members if member.error is not None]
            raise errors[0] if errors else StorageError("no destination left to write to")
        return live

    async def open_segment(self, index: int, offset: int) -> SegmentWriter:
        """Segment `index` in every live destination; one that cannot open it fails alone."""
        members = self._live()
        opened = await asyncio.gather(*(_open(m, index, offset) for m in members))
        pairs = [(m, s) for m, s in zip(members, opened, strict=True) if s is not None]
        self._live()
        if all(isinstance(segment, ThreadWritableSegment) for _, segment in pairs):
            return _ThreadTeeSegment(pairs)
        return _TeeSegment(pairs)

    async def read_back(self, offset: int, size: int) -> bytes:
        """The bytes from the first destination that can read them back."""
        error: BaseException | None = None
        for member in self._live():
            assert member.upload is not None
            try:
                return await member.upload.read_back(offset, size)
            except DESTINATION_ERRORS as problem:
                error = error or problem
        assert error is not None
        raise error

    async def commit(self, *, size: int, sha256: str) -> None:
        """Finish the age streams, then commit in every live destination at once, each with
        its hooks around it; fails only when none committed."""
        await asyncio.gather(*(_finish_sealed(member, size) for member in self._live()))
        members = self._live()
        # Each destination's whole commit runs to its end even when another's raises (a
        # half-run hook would leave a final name without its manifest until the next pass).
        outcomes = await asyncio.gather(
            *(self._commit_one(member, size, sha256) for member in members),
            return_exceptions=True,
        )
        await self._abort_failed()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        self._live()

    async def _commit_one(self, member: Member, size: int, sha256: str) -> None:
        """One destination: recorded, committed, then heard at once (its manifest)."""
        if self._hooks.before is not None:
            self._hooks.before(member)
        await _commit(member, size, sha256)
        if self._hooks.after is not None:
            await self._hooks.after(member)

    async def abort(self) -> None:
        """Abort every destination's upload (failed ones included). Idempotent."""
        await asyncio.gather(*(_quietly(m.upload.abort()) for m in self._members if m.upload))

    async def suspend(self) -> None:
        """Leave the live uploads for a later resume; abort the failed ones."""
        await self._abort_failed()
        live = [m.upload for m in self._members if m.live and m.upload is not None]
        await asyncio.gather(*(_quietly(upload.suspend()) for upload in live))

    async def _abort_failed(self) -> None:
        failed = [m for m in self._members if m.error is not None and m.upload is not None]
        await asyncio.gather(*(_quietly(m.upload.abort()) for m in failed if m.upload))


async def _open(member: Member, index: int, offset: int) -> SegmentWriter | None:
    assert member.upload is not None
    try:
        return await member.upload.open_segment(index, offset)
    except DESTINATION_ERRORS as error:
        member.fail(error)
        return None


async def _finish_sealed(member: Member, size: int) -> None:
    """End an encrypting destination's age stream: its stored size and sha256 are then known."""
    if isinstance(member.upload, SealedUpload):
        try:
            await member.upload.finish(size)
        except DESTINATION_ERRORS as error:
            member.fail(error)


async def _commit(member: Member, size: int, sha256: str) -> None:
    assert member.upload is not None
    try:
        await member.upload.commit(size=size, sha256=sha256)
    except DESTINATION_ERRORS as error:
        member.fail(error)
        return
    member.committed = True


async def _quietly(work: Awaitable[None]) -> None:
    """Clean-up that must not hide the error being raised: its own errors are logged."""
    try:
        await work
    except DESTINATION_ERRORS as error:
        log.warning("could not clean up an upload", error=redact(str(error)))


class _TeeSegment:
    """One segment in several destinations: each write waits for all (the slowest sets the pace)."""

    def __init__(self, pairs: Sequence[tuple[Member, SegmentWriter]]) -> None:
        self._pairs = list(pairs)

    def _live(self) -> list[tuple[Member, SegmentWriter]]:
        live = [(member, segment) for member, segment in self._pairs if member.live]
        if not live:
            raise next(m.error for m, _ in self._pairs if m.error is not None)
        return live

    async def _each(self, action: str, *args: bytes) -> None:
        async def one(member: Member, segment: SegmentWriter) -> None:
            try:
                await getattr(segment, action)(*args)
            except DESTINATION_ERRORS as error:
                member.fail(error)

        await asyncio.gather(*(one(member, segment) for member, segment in self._live()))
        self._live()

    async def write(self, chunk: bytes) -> None:
        """Write `chunk` into every live destination's segment."""
        await self._each("write", chunk)

    async def rewind(self) -> None:
        """Start the segment over everywhere (an encrypted one cannot: it fails alone)."""
        await self._each("rewind")

    async def close(self) -> None:
        """Close every live destination's segment."""
        await self._each("close")


class _ThreadTeeSegment(_TeeSegment):
    """Every destination writes from a worker thread (local folders): so does the tee."""

    def write_in_thread(self, pieces: Sequence[Piece]) -> None:
        """Write `pieces` into each live destination in turn, from the caller's thread."""
        live = self._live()
        for member, segment in live:
            assert isinstance(segment, ThreadWritableSegment)
            try:
                segment.write_in_thread(pieces)
            except DESTINATION_ERRORS as error:
                member.fail(error)
        self._live()


class _AheadUpload:
    """A resumed upload holding more durable bytes than the tee resumes from: the bytes below
    `ahead` are already there (from the same upstream file), so they are not written again."""

    def __init__(self, upload: Upload, ahead: int) -> None:
        self._upload = upload
        self._ahead = ahead

    async def open_segment(self, index: int, offset: int) -> SegmentWriter:
        return _SkippingSegment(self._upload, index, offset, self._ahead)

    async def read_back(self, offset: int, size: int) -> bytes:
        return await self._upload.read_back(offset, size)

    async def commit(self, *, size: int, sha256: str) -> None:
        await self._upload.commit(size=size, sha256=sha256)

    async def abort(self) -> None:
        await self._upload.abort()

    async def suspend(self) -> None:
        await self._upload.suspend()


class _SkippingSegment:
    """A segment that drops the bytes before `ahead` and opens the real one where they end."""

    def __init__(self, upload: Upload, index: int, offset: int, ahead: int) -> None:
        self._upload = upload
        self._index = index
        self._offset = offset
        self._ahead = ahead
        self._position = offset
        self._inner: SegmentWriter | None = None

    async def write(self, chunk: bytes) -> None:
        start = self._position
        self._position += len(chunk)
        if self._position <= self._ahead:
            return
        if self._inner is None:
            self._inner = await self._upload.open_segment(self._index, max(start, self._ahead))
        await self._inner.write(chunk[max(0, self._ahead - start) :])

    async def rewind(self) -> None:
        self._position = self._offset
        if self._inner is not None:
            await self._inner.rewind()

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()

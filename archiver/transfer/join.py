"""One backup's parts joined in order into one storage upload, committed only when whole.

The parts of a multi-part Cloud 66 backup are plain byte pieces of one tar
(`cat x.tar-aa x.tar-ab > x.tar`). The parts are downloaded side by side
(`archiver.transfer.download`) and each is written straight into its segment of one
upload, one part after the other, so the join never writes a byte twice and
never reads one back.

The manifest needs each part's sha256 and the joined file's. The first part's
sha256 *is* the start of the joined one, so its bytes are hashed once; every
later part's bytes go through both digests (SHA-256 states cannot be combined),
from the same buffers, on two threads (`archiver.transfer.chunks`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from archiver.core.errors import IntegrityError, PermanentStorageError, StorageError, TransferError
from archiver.model.manifest import PartRecord
from archiver.storage.base import Upload, UploadTarget
from archiver.transfer.chunks import PartHashes
from archiver.transfer.download import (
    ByteCallback,
    Downloader,
    FactsCallback,
    PartFacts,
    PartSource,
    PartToFetch,
    ResumePoint,
)
from archiver.transfer.encryption import AgeEncryption
from archiver.transfer.etags import bare_etag
from archiver.transfer.part_writer import PartProgress, WriteTarget, write_part
from archiver.transfer.sealed_upload import SealedUpload

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class JoinedResult:
    """The joined backup as committed to storage.

    `size` and `sha256` are the backup's own (the plaintext); an encrypted backup
    also has the stored ciphertext's (`stored_size`, `stored_sha256`).
    """

    size: int
    sha256: str
    parts: list[PartRecord]
    stored_size: int | None = None
    stored_sha256: str | None = None


PartFactsCallback = Callable[[int, str, PartFacts], None]
# Told the joined result once the data is whole and checked, just before its commit.
BeforeCommit = Callable[[JoinedResult], None]
# Durable bytes are read back and hashed again in pieces of this size when resuming.
_REHASH_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class KnownPart:
    """A part of an earlier, unfinished transfer of the same backup, as it was recorded."""

    id: str
    facts: PartFacts


def resumable(error: BaseException) -> bool:
    """Whether an upload that failed with `error` is worth keeping for a later pass.

    Kept: a stop, a cancellation, a download that kept failing, an unreachable API or
    storage. Not kept: data that does not check out, or storage that refuses.
    """
    return not isinstance(error, IntegrityError | PermanentStorageError)


class BackupJoiner:
    """Streams all parts of one backup into one upload, joined in order."""

    def __init__(self, downloader: Downloader, storage: UploadTarget) -> None:
        self._downloader = downloader
        self._storage = storage

    async def archive(
        self,
        key: str,
        parts: Sequence[PartSource],
        *,
        on_size: ByteCallback,
        on_bytes: ByteCallback,
        encrypt_to: AgeEncryption | None = None,
        known: Sequence[KnownPart] = (),
        on_facts: PartFactsCallback | None = None,
        before_commit: BeforeCommit | None = None,
    ) -> JoinedResult:
        """Download every part into `key`; commit only when all of it checked out.

        With `encrypt_to`, what is stored is the age encryption of the joined backup.
        With `known` (the parts an earlier transfer recorded), an unfinished upload of
        `key` is resumed: its durable bytes are read back and hashed again, and the
        download goes on after them. `on_facts` hears each part's facts as they come,
        to be recorded for such a resume. `before_commit` hears the result (stored size
        and sha256 included) just before the data reaches its final name. On failure
        the upload is kept for a later pass when that is worth it (see `resumable`),
        else removed.
        """
        if not parts:
            raise TransferError("the backup lists no files")
        upload, durable = await self._open(key, encrypt_to, known)
        moved = 0

        def count(size: int) -> None:
            nonlocal moved
            moved += size
            on_bytes(size)

        try:
            callbacks = _Callbacks(on_size, count, on_facts)
            joined = await _Join(self._downloader, upload, durable, known, callbacks).run(parts)
            if isinstance(upload, SealedUpload):
                await upload.finish(joined.size)
                joined = dataclasses.replace(
                    joined, stored_size=upload.stored_size, stored_sha256=upload.stored_sha256
                )
            if before_commit is not None:
                before_commit(joined)
            await upload.commit(size=joined.size, sha256=joined.sha256)
        except BaseException as error:
            # Kept only when there is something to resume from, and it can be resumed.
            keep = resumable(error) and not encrypt_to and moved > 0
            await asyncio.shield(self._suspend_or_abort(upload, keep))
            raise
        return joined

    async def _open(
        self, key: str, encrypt_to: AgeEncryption | None, known: Sequence[KnownPart]
    ) -> tuple[Upload, int]:
        """The upload to write, and how many of its first bytes are already there."""
        if known and not encrypt_to:  # an encrypted upload never resumes (its key is gone)
            resumed = await self._storage.resume_upload(key)
            if resumed is not None:
                log.info("resuming an unfinished upload", key=key, durable_bytes=resumed.durable)
                return resumed.upload, resumed.durable
        stored = await self._storage.start_upload(key)
        return (SealedUpload(stored, encrypt_to) if encrypt_to else stored), 0

    @staticmethod
    async def _suspend_or_abort(upload: Upload, keep: bool) -> None:
        try:
            await (upload.suspend() if keep else upload.abort())
        except StorageError as error:
            log.warning("could not leave an unfinished upload behind cleanly", error=str(error))


class _Join:
    """One backup's parts, joined in order into one upload (maybe resumed)."""

    def __init__(
        self,
        downloader: Downloader,
        upload: Upload,
        durable: int,
        known: Sequence[KnownPart],
        callbacks: _Callbacks,
    ) -> None:
        self._downloader = downloader
        self._upload = upload
        self._durable = durable
        self._known = known
        self._callbacks = callbacks
        self._results: list[PartRecord] = []
        self._hashes = PartHashes()  # the first part's sha256 starts the joined one
        self._offset = 0

    async def run(self, parts: Sequence[PartSource]) -> JoinedResult:
        """The parts in order, each at the offset where the previous one ended.

        In order for every backend: S3 needs it (part numbers), an encryptor too,
        and the joined sha256 can then ride along with the bytes as they stream.
        Parts wholly within the durable bytes are hashed again from storage; the
        part that holds the first missing byte resumes there, and it and every part
        after it are fetched side by side (`archiver.transfer.backup_fetch`) while they are
        written one after the other.
        """
        index, resume = await self._rehash_durable(parts)
        if index < len(parts):
            await self._fetch_rest(parts, index, resume)
        return JoinedResult(
            size=self._offset, sha256=self._hashes.whole().hexdigest(), parts=self._results
        )

    def _next_hashes(self, index: int) -> PartHashes:
        return PartHashes(joined=self._hashes.whole()) if index else self._hashes

    async def _rehash_durable(self, parts: Sequence[PartSource]) -> tuple[int, ResumePoint | None]:
        """Hash the parts in the durable bytes again; the first part to fetch, and where."""
        callbacks = self._callbacks
        for index, part in enumerate(parts):
            if self._durable <= self._offset:
                return index, None
            facts = _recorded(self._known, index, part)
            already = min(self._durable - self._offset, facts.size or 0)
            self._hashes = self._next_hashes(index)
            await self._rehash(self._offset, already, self._hashes, facts)
            callbacks.on_size(already)
            callbacks.on_bytes(already)
            if already != facts.size:
                return index, ResumePoint(already, facts)
            self._results.append(_checked(part, facts, self._hashes))
            self._offset += facts.size or 0
        return len(parts), None

    async def _fetch_rest(
        self, parts: Sequence[PartSource], first: int, resume: ResumePoint | None
    ) -> None:
        """Fetch parts `first`.. side by side; write them in order."""
        wanted = [
            PartToFetch(index, parts[index])
            if index != first or resume is None
            else PartToFetch(index, parts[index], start=resume.written, known=resume.facts)
            for index in range(first, len(parts))
        ]
        position = self._offset + (resume.written if resume else 0)
        fetches, window = self._downloader.backup(wanted, base=self._offset, position=position)
        callbacks = self._callbacks
        async with fetches:
            for index in range(first, len(parts)):
                part_resume = resume if index == first else None
                if part_resume is None:
                    self._hashes = self._next_hashes(index)
                fetch = await fetches.part(index)
                target = WriteTarget(
                    self._upload, index, self._offset, window, self._downloader.sink_in_flight
                )
                progress = PartProgress(
                    callbacks.size_of_part(part_resume),
                    callbacks.on_bytes,
                    callbacks.facts_of(index, parts[index].id),
                )
                record = await write_part(fetch, target, self._hashes, progress, part_resume)
                self._results.append(record)
                self._offset += record.size

    async def _rehash(
        self, offset: int, size: int, hashes: PartHashes, facts: PartFacts
    ) -> None:
        """Feed a part's durable bytes, read back from storage, to its digests."""
        if facts.md5 is not None:
            hashes.md5 = hashlib.md5(usedforsecurity=False)
        digests = [d for d in (hashes.sha256, hashes.md5, hashes.joined) if d is not None]
        for start in range(offset, offset + size, _REHASH_CHUNK):
            length = min(_REHASH_CHUNK, offset + size - start)
            data = await self._upload.read_back(start, length)
            if len(data) != length:
                raise IntegrityError("the unfinished upload holds fewer bytes than it said")
            await asyncio.to_thread(_feed_all, digests, data)


@dataclass(frozen=True)
class _Callbacks:
    """What the caller hears: sizes and bytes (progress) and each part's facts (resume)."""

    on_size: ByteCallback
    on_bytes: ByteCallback
    on_facts: PartFactsCallback | None

    def size_of_part(self, resume: ResumePoint | None) -> ByteCallback:
        """A resumed part's size was reported with its durable bytes: only the rest."""
        if resume is None:
            return self.on_size
        written = resume.written
        return lambda total: self.on_size(total - written)

    def facts_of(self, index: int, part_id: str) -> FactsCallback | None:
        on_facts = self.on_facts
        if on_facts is None:
            return None
        return lambda facts: on_facts(index, part_id, facts)


def _recorded(known: Sequence[KnownPart], index: int, part: PartSource) -> PartFacts:
    """The recorded facts of a part holding durable bytes; the resume is refused without."""
    if index >= len(known) or known[index].id != part.id or known[index].facts.size is None:
        raise IntegrityError(
            f"the unfinished upload does not match the backup's files at {part.id}: "
            "it is archived afresh on the next pass"
        )
    return known[index].facts


def _checked(part: PartSource, facts: PartFacts, hashes: PartHashes) -> PartRecord:
    """The record of a part found whole in storage, its MD5 checked when there is one."""
    if hashes.md5 is not None and hashes.md5.hexdigest() != facts.md5:
        raise IntegrityError(f"file {part.id}: MD5 of the stored bytes does not match the ETag")
    return PartRecord(
        id=part.id, name=part.name, size=facts.size or 0, sha256=hashes.sha256.hexdigest(),
        etag=bare_etag(facts.etag),
    )


def _feed_all(digests: list[Any], data: bytes) -> None:
    for digest in digests:
        digest.update(data)

"""One backup's parts joined in order into one storage upload, committed only when whole.

The parts of a multi-part Cloud 66 backup are plain byte pieces of one tar
(`cat x.tar-aa x.tar-ab > x.tar`). Each part is downloaded (`archiver.download`)
straight into its segment of one upload, one part after the other, so the join
never writes a byte twice and never reads one back.

The manifest needs each part's sha256 and the joined file's. The first part's
sha256 *is* the start of the joined one, so its bytes are hashed once; every
later part's bytes go through both digests (SHA-256 states cannot be combined),
from the same buffers, on two threads (`archiver.chunks`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from archiver.chunks import PartHashes
from archiver.download import ByteCallback, Downloader, PartSource
from archiver.encryption import Recipient
from archiver.errors import StorageError, TransferError
from archiver.manifest import PartRecord
from archiver.sealed_upload import SealedUpload
from archiver.storage.base import Storage, Upload

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


class BackupJoiner:
    """Streams all parts of one backup into one upload, joined in order."""

    def __init__(self, downloader: Downloader, storage: Storage) -> None:
        self._downloader = downloader
        self._storage = storage

    async def archive(
        self,
        key: str,
        parts: Sequence[PartSource],
        *,
        on_size: ByteCallback,
        on_bytes: ByteCallback,
        encrypt_to: Sequence[Recipient] = (),
    ) -> JoinedResult:
        """Download every part into `key`; commit only when all of it checked out.

        With `encrypt_to`, what is stored is the age encryption of the joined backup.
        """
        if not parts:
            raise TransferError("the backup lists no files")
        stored = await self._storage.start_upload(key)
        upload: Upload = SealedUpload(stored, encrypt_to) if encrypt_to else stored
        try:
            joined = await self._join(upload, parts, on_size, on_bytes)
            await upload.commit(size=joined.size, sha256=joined.sha256)
        except BaseException:
            await asyncio.shield(self._abort_quietly(upload))
            raise
        if isinstance(upload, SealedUpload):
            return dataclasses.replace(
                joined, stored_size=upload.stored_size, stored_sha256=upload.stored_sha256
            )
        return joined

    async def _join(
        self,
        upload: Upload,
        parts: Sequence[PartSource],
        on_size: ByteCallback,
        on_bytes: ByteCallback,
    ) -> JoinedResult:
        """One part after the other, each at the offset where the previous one ended.

        In order for every backend: S3 needs it (part numbers), an encryptor will,
        and the joined sha256 can then ride along with the bytes as they stream.
        """
        results: list[PartRecord] = []
        hashes = PartHashes()  # the first part's sha256 starts the joined one
        offset = 0
        for index, part in enumerate(parts):
            if index:
                hashes = PartHashes(joined=hashes.whole())
            segment = await upload.open_segment(index, offset)
            result = await self._downloader.fetch_part(
                part, segment, on_size=on_size, on_bytes=on_bytes, hashes=hashes
            )
            results.append(result)
            offset += result.size
        return JoinedResult(size=offset, sha256=hashes.whole().hexdigest(), parts=results)

    @staticmethod
    async def _abort_quietly(upload: Upload) -> None:
        try:
            await upload.abort()
        except StorageError as error:
            log.warning("could not remove an unfinished upload", error=str(error))

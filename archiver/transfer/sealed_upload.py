"""An upload that stores age ciphertext: plaintext in, in order; encrypted on its way out.

`SealedUpload` wraps a storage `Upload` and presents the same protocol to the
join: the join writes the backup's plaintext segment after segment, in order,
and this object passes each chunk through one `AgeStream` and writes the
ciphertext, sequentially, into one segment of the real upload. So no plaintext
byte ever reaches storage, not even under a temporary name. It also hashes
what is stored, for the manifest's `stored_sha256` (what `verify` checks
without a key).

An encrypted stream cannot go back: a segment cannot rewind (a server that
ignored `Range` fails this backup for this pass; it starts over the next), and
an encrypted upload is never resumed after a restart (the file key lives only
in pyrage's memory).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from archiver.config.keys import Recipient
from archiver.core.errors import PermanentStorageError
from archiver.storage.base import SegmentWriter, Upload
from archiver.transfer.encryption import AgeStream, EncryptionFailed


class _SealedSegment:
    """One plaintext segment of a sealed upload: encrypted in order as it is written."""

    def __init__(self, upload: SealedUpload, index: int) -> None:
        self._upload = upload
        self._index = index

    async def write(self, chunk: bytes) -> None:
        """Encrypt `chunk` and write what the encryptor gives back."""
        await self._upload.seal(self._index, chunk)

    async def rewind(self) -> None:
        """Impossible: what went through the encryptor cannot be taken back."""
        raise PermanentStorageError(
            "an encrypted upload cannot start a part over (the server ignored Range?): "
            "the backup starts afresh on the next pass"
        )

    async def close(self) -> None:
        """Nothing to flush here: the ciphertext is flushed at commit."""


class SealedUpload:
    """The `Upload` protocol over another upload, storing age ciphertext."""

    def __init__(self, inner: Upload, recipients: Sequence[Recipient]) -> None:
        self._inner = inner
        self._recipients = list(recipients)
        self._stream: AgeStream | None = None
        self._target: SegmentWriter | None = None
        self._next_index = 0
        self._plaintext = 0
        self._stored_digest = hashlib.sha256()
        self.stored_size = 0
        self.stored_sha256 = ""
        self._finished = False

    async def open_segment(self, index: int, offset: int) -> SegmentWriter:
        """The plaintext segment `index`; segments must come in order, each after the last."""
        if index != self._next_index or offset != self._plaintext:
            raise PermanentStorageError(
                f"an encrypted upload is written in order: segment {index} at byte {offset} "
                f"does not follow byte {self._plaintext}"
            )
        if self._stream is None:
            # The ciphertext is hashed on the encryptor's thread, in order, off the loop.
            self._stream = AgeStream.encrypting(self._recipients, self._stored_digest.update)
            self._target = await self._inner.open_segment(0, 0)
        self._next_index += 1
        return _SealedSegment(self, index)

    async def seal(self, index: int, chunk: bytes) -> None:
        """Encrypt one plaintext chunk of segment `index` and store its ciphertext."""
        if index != self._next_index - 1:
            raise PermanentStorageError(f"segment {index} of an encrypted upload is closed")
        assert self._stream is not None
        self._plaintext += len(chunk)
        await self._store(await self._feed(chunk))

    async def _feed(self, chunk: bytes) -> bytes:
        assert self._stream is not None
        try:
            return await self._stream.feed(chunk)
        except EncryptionFailed as error:
            raise PermanentStorageError(str(error)) from None

    async def _store(self, ciphertext: bytes) -> None:
        if ciphertext:
            assert self._target is not None
            self.stored_size += len(ciphertext)
            await self._target.write(ciphertext)

    async def read_back(self, offset: int, size: int) -> bytes:
        """Not offered: what is stored is ciphertext."""
        raise PermanentStorageError("an encrypted upload cannot be read back")

    async def finish(self, size: int) -> None:
        """End the age stream and store its last bytes: `stored_size` and `stored_sha256`
        are final from here (a manifest can be made before `commit`). Idempotent.

        `size` is the plaintext's, checked against what was sealed.
        """
        if self._finished:
            return
        if size != self._plaintext:
            raise PermanentStorageError(
                f"encrypted upload got {self._plaintext} plaintext bytes, expected {size}"
            )
        if self._stream is None:  # an empty backup: still a valid age file
            await self.open_segment(0, 0)
        assert self._stream is not None
        assert self._target is not None
        try:
            await self._store(await self._stream.finish())
        except EncryptionFailed as error:
            raise PermanentStorageError(str(error)) from None
        await self._target.close()
        self.stored_sha256 = self._stored_digest.hexdigest()
        self._finished = True

    async def commit(self, *, size: int, sha256: str) -> None:
        """`finish`, then commit the ciphertext under the key.

        `size` is the plaintext's; the stored object's size and sha256 are those of
        the ciphertext (`stored_size`, `stored_sha256`).
        """
        await self.finish(size)
        await self._inner.commit(size=self.stored_size, sha256=self.stored_sha256)
        del sha256  # the plaintext's: the manifest records it, storage keeps the ciphertext's

    async def suspend(self) -> None:
        """An encrypted upload cannot be resumed (its file key lives only in memory): abort."""
        await self.abort()

    async def abort(self) -> None:
        """Stop the encryptor (never producing a valid end) and remove the upload."""
        if self._stream is not None:
            self._stream.abort()
        await self._inner.abort()

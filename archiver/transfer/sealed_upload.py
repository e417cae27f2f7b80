"""An upload that stores age ciphertext: plaintext in, in order; encrypted on its way out.

`SealedUpload` wraps a storage `Upload` and presents the same protocol to the
join: the join writes the backup's plaintext segment after segment, in order,
and this object passes it through one age encryptor and writes the ciphertext,
sequentially, into one segment of the real upload. So no plaintext byte ever
reaches storage, not even under a temporary name. It also hashes what is
stored, for the manifest's `stored_sha256` (what `verify` checks without a key).

Two encryptors make the same age v1 file:

- the `age` binary (`archiver.transfer.age_process`), where there is one that works:
  the segments take plaintext straight from the thread that hashes each chunk
  (`write_in_thread`), age encrypts in its own process, and a reader thread
  hashes the ciphertext and stores it: from that thread for a local file, through
  the event loop for S3 and SFTP. The GIL is never held for the cipher;
- pyrage in this process (`AgeStream`), fed chunk by chunk from the event loop.

An encrypted stream cannot go back: a segment cannot rewind (a server that
ignored `Range` fails this backup for this pass; it starts over the next), and
an encrypted upload is never resumed after a restart (the file key lives only
in the encryptor's memory).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

from archiver.core.errors import PermanentStorageError, StorageError
from archiver.storage.base import Piece, SegmentWriter, ThreadWritableSegment, Upload
from archiver.transfer.age_process import AgeProcess, AgeProcessFailed, Deliver
from archiver.transfer.encryption import AgeEncryption, AgeStream, EncryptionFailed

_NOT_BACK = (
    "an encrypted upload cannot start a part over (the server ignored Range?): "
    "the backup starts afresh on the next pass"
)


class _SealedSegment:
    """One plaintext segment of a sealed upload: encrypted in order as it is written."""

    def __init__(self, upload: SealedUpload, index: int) -> None:
        self._upload = upload
        self._index = index

    async def write(self, chunk: bytes) -> None:
        """Encrypt `chunk` and store what the encryptor gives back."""
        await self._upload.seal(self._index, chunk)

    async def rewind(self) -> None:
        """Impossible: what went through the encryptor cannot be taken back."""
        raise PermanentStorageError(_NOT_BACK)

    async def close(self) -> None:
        """Nothing to flush here: the ciphertext is flushed at commit."""


class _PipedSegment(_SealedSegment):
    """A segment whose plaintext goes to the age process from the hashing thread."""

    def write_in_thread(self, pieces: Sequence[Piece]) -> None:
        """Hand `pieces` to age (blocking while it is busy). Not on the event loop."""
        self._upload.pipe(self._index, pieces)

    async def write(self, chunk: bytes) -> None:
        """From the loop: the same, in a worker thread."""
        await asyncio.to_thread(self.write_in_thread, [chunk])


class SealedUpload:
    """The `Upload` protocol over another upload, storing age ciphertext."""

    def __init__(self, inner: Upload, encryption: AgeEncryption) -> None:
        self._inner = inner
        self._encryption = encryption
        self._stream: AgeStream | None = None  # pyrage
        self._process: AgeProcess | None = None  # the age binary
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
        if self._target is None:
            self._target = await self._inner.open_segment(0, 0)
            self._start_encryptor(self._target)
        self._next_index += 1
        return _PipedSegment(self, index) if self._process else _SealedSegment(self, index)

    def _start_encryptor(self, target: SegmentWriter) -> None:
        binary = self._encryption.age_binary
        if binary is None:
            # The ciphertext is hashed on the encryptor's thread, in order, off the loop.
            self._stream = AgeStream.encrypting(
                self._encryption.recipients, self._stored_digest.update
            )
            return
        try:
            self._process = AgeProcess(
                binary, self._encryption.recipient_texts, self._store_from_thread(target)
            )
        except OSError as error:
            raise PermanentStorageError(f"age encryption failed: cannot start {binary} "
                                        f"({error.strerror or error})") from None

    def _store_from_thread(self, target: SegmentWriter) -> Deliver:
        """What the age reader thread does with each piece of ciphertext: hash and store it."""
        digest, loop = self._stored_digest, asyncio.get_running_loop()
        direct = target if isinstance(target, ThreadWritableSegment) else None

        def deliver(ciphertext: memoryview) -> None:
            digest.update(ciphertext)  # lets go of the GIL
            self.stored_size += len(ciphertext)
            if direct is not None:  # a local file: written from this thread
                direct.write_in_thread([ciphertext])
                return
            copy = bytes(ciphertext)  # the reader reuses its buffer
            asyncio.run_coroutine_threadsafe(target.write(copy), loop).result()

        return deliver

    def pipe(self, index: int, pieces: Sequence[Piece]) -> None:
        """Plaintext of segment `index` to the age process (a worker thread, blocking)."""
        self._check_open(index)
        assert self._process is not None
        try:
            self._process.write(pieces)
        except AgeProcessFailed as error:
            raise PermanentStorageError(str(error)) from None
        self._plaintext += sum(len(piece) for piece in pieces)

    async def seal(self, index: int, chunk: bytes) -> None:
        """Encrypt one plaintext chunk of segment `index` with pyrage and store the result."""
        self._check_open(index)
        assert self._stream is not None
        self._plaintext += len(chunk)
        try:
            await self._store(await self._stream.feed(chunk))
        except EncryptionFailed as error:
            raise PermanentStorageError(str(error)) from None

    def _check_open(self, index: int) -> None:
        if index != self._next_index - 1:
            raise PermanentStorageError(f"segment {index} of an encrypted upload is closed")

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
        if self._target is None:  # an empty backup: still a valid age file
            await self.open_segment(0, 0)
        assert self._target is not None
        await self._finish_encryptor()
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

    async def _finish_encryptor(self) -> None:
        """Every byte of ciphertext stored, or the encryptor's failure as a StorageError."""
        try:
            if self._process is not None:
                await self._process.finish()
            elif self._stream is not None:
                await self._store(await self._stream.finish())
        except StorageError:
            raise  # storing the ciphertext failed: that error, as it is
        except (AgeProcessFailed, EncryptionFailed) as error:
            raise PermanentStorageError(str(error)) from None

    async def suspend(self) -> None:
        """An encrypted upload cannot be resumed (its file key lives only in memory): abort."""
        await self.abort()

    async def abort(self) -> None:
        """Stop the encryptor (never producing a valid end) and remove the upload."""
        if self._process is not None:
            self._process.kill()
        if self._stream is not None:
            self._stream.abort()
        await self._inner.abort()

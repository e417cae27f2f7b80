"""A backup filled in from another destination's copy: read, checked as it streams, written.

No Cloud 66 request is involved, so this works after Cloud 66 has rotated the
backup away. The bytes are read from the source destination, hashed as they
stream, and written into the destinations that lack the backup (a `FanOut`);
they are committed only when size and sha256 match the source's manifest, so a
copy that went bad in storage is never copied on.

- `copy_stored`: both store the backup the same way (both plain, or both
  encrypted to the same recipients): the stored bytes as they are, checked
  against the manifest's `stored_size` and `stored_sha256`.
- `copy_plaintext`: the plaintext (decrypted from an encrypted copy with an
  identity, or read from a plain one), checked against the manifest's `size` and
  `sha256`, and sealed again where a destination encrypts.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from archiver.config.keys import Identity
from archiver.core.errors import IntegrityError
from archiver.model.layout import ENCRYPTED_SUFFIX
from archiver.model.manifest import ArchivedBackup, Manifest
from archiver.storage.destinations import Destination
from archiver.transfer.encryption import AgeStream, CorruptCiphertext, WrongIdentity
from archiver.transfer.fan_out import FanOut

ByteCallback = Callable[[int], None]


@dataclass(frozen=True)
class CopySource:
    """Another destination's copy of the backup: where, its record, its manifest."""

    destination: Destination
    record: ArchivedBackup
    manifest: Manifest

    @property
    def plain_key(self) -> str:
        """The backup's plaintext data key (the same in every destination)."""
        return self.record.tar_key.removesuffix(ENCRYPTED_SUFFIX)


async def copy_stored(source: CopySource, fan_out: FanOut, on_bytes: ByteCallback) -> None:
    """Copy the stored bytes as they are into `fan_out` (made with `seal=False`)."""
    chunks = source.destination.storage.read_chunks(source.record.tar_key)
    manifest = source.manifest
    expected = (manifest.expected_stored_size, manifest.expected_stored_sha256)
    await _stream(chunks, fan_out, source, expected, on_bytes)


async def copy_plaintext(
    source: CopySource,
    fan_out: FanOut,
    identities: Sequence[Identity],
    on_bytes: ByteCallback,
) -> None:
    """Copy the plaintext (decrypted with `identities` if the source is encrypted) into
    `fan_out` (made with `seal=True`, so a destination that encrypts gets ciphertext)."""
    chunks: AsyncIterator[bytes] = source.destination.storage.read_chunks(source.record.tar_key)
    if source.manifest.encrypted:
        chunks = _decrypted(chunks, identities, source)
    expected = (source.manifest.size, source.manifest.sha256)
    await _stream(chunks, fan_out, source, expected, on_bytes)


async def _stream(
    chunks: AsyncIterator[bytes],
    fan_out: FanOut,
    source: CopySource,
    expected: tuple[int, str],
    on_bytes: ByteCallback,
) -> None:
    """Write `chunks` into every destination of `fan_out`; commit only when they check out."""
    upload = await fan_out.start_upload(source.plain_key)
    try:
        segment = await upload.open_segment(0, 0)
        size, sha256 = await _hashed_copy(chunks, segment.write, source, expected[0], on_bytes)
        await segment.close()
        if (size, sha256) != expected:
            raise IntegrityError(
                f"the copy in {source.destination.name!r} does not match its manifest "
                f"({size} bytes, sha256 {sha256[:12]}...; expected {expected[0]} bytes, "
                f"sha256 {expected[1][:12]}...): not copied on"
            )
        await upload.commit(size=size, sha256=sha256)
    except BaseException:
        await asyncio.shield(upload.abort())
        raise


async def _hashed_copy(
    chunks: AsyncIterator[bytes],
    write: Callable[[bytes], Awaitable[None]],
    source: CopySource,
    limit: int,
    on_bytes: ByteCallback,
) -> tuple[int, str]:
    """Hash each chunk (off the loop: hashlib lets go of the GIL) and write it; stop early
    when the source holds more than its manifest says."""
    digest = hashlib.sha256()
    size = 0
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise IntegrityError(
                    f"the copy in {source.destination.name!r} is longer than its manifest says"
                )
            await asyncio.to_thread(digest.update, chunk)
            await write(chunk)
            on_bytes(len(chunk))
    except FileNotFoundError:
        raise IntegrityError(f"the copy in {source.destination.name!r} is missing") from None
    return size, digest.hexdigest()


async def _decrypted(
    chunks: AsyncIterator[bytes], identities: Sequence[Identity], source: CopySource
) -> AsyncIterator[bytes]:
    """The plaintext of an age file, decrypted as it streams."""
    stream = AgeStream.decrypting(identities)
    try:
        async for chunk in chunks:
            if plaintext := await stream.feed(chunk):
                yield plaintext
        if rest := await stream.finish():
            yield rest
    except (WrongIdentity, CorruptCiphertext) as error:
        stream.abort()
        raise IntegrityError(
            f"the copy in {source.destination.name!r} cannot be decrypted: {error}"
        ) from None
    except BaseException:
        stream.abort()
        raise

"""`c66-archiver restore`: stream an archived backup back out, checked as it goes.

To a file: written under a temporary name beside it (0600), fsynced, and
renamed to its name only when size and sha256 match the manifest; on a
mismatch nothing is left at the path and the exit code is 1. A file already
at the path is refused (exit 2) unless `force`, and that holds to the last
instant: the finished file is hard-linked into place, which fails if a name
appeared meanwhile. A folder as the path gets the plaintext's name inside it
(`<database_name>.tar`), under the same rule. To `-`: bytes go to stdout as
they are read (for `| tar -x`), logs to stderr only; a mismatch found at the
end is reported on stderr with exit 1, and the reader must discard what it
got. A reader that stops early (`| head`) is no mismatch: the BrokenPipeError
goes up to the command line, which ends quietly with 141, as SIGPIPE would.

A reader: it takes no state lock, and works on a fresh machine with only the
config (the state is rebuilt from storage first).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import BinaryIO

import structlog

from archiver.config.keys import Identity
from archiver.config.settings import Settings, destination_named
from archiver.core.errors import EXIT_OK, EXIT_PARTIAL, ArchiverError, ConfigError
from archiver.core.private_files import create_private_file, fsync_folder
from archiver.lifecycle.archive import Archive, open_archive
from archiver.lifecycle.identity import identities_for
from archiver.model.layout import ENCRYPTED_SUFFIX
from archiver.model.manifest import ArchivedBackup, Manifest
from archiver.storage.destinations import Destination
from archiver.transfer.encryption import AgeStream, CorruptCiphertext, WrongIdentity

log = structlog.get_logger(__name__)

STDOUT = "-"


class RestoreMismatch(ArchiverError):
    """Permanent: the stored data does not match its manifest. Exit 1."""


def find_copies(
    records: list[ArchivedBackup],
    backup_id: int,
    stack_uid: str | None,
    order: Sequence[str],
) -> list[ArchivedBackup]:
    """The copies of the one archived backup with this id (in this stack), in the order of
    the destinations `order` names (others left out); a ConfigError (exit 2) when there is no
    such backup there, or the id is archived for several stacks."""
    matches = [
        record
        for record in records
        if record.backup_id == backup_id
        and stack_uid in (None, record.stack_uid)
        and record.storage in order
    ]
    if not matches:
        where = f" of stack {stack_uid}" if stack_uid else ""
        raise ConfigError(
            f"no archived backup {backup_id}{where} (`c66-archiver status --all` lists them)"
        )
    stacks = sorted({record.stack_uid for record in matches})
    if len(stacks) > 1:
        raise ConfigError(
            f"backup id {backup_id} is archived for several stacks ({', '.join(stacks)}): "
            "pick one with --stack"
        )
    return sorted(matches, key=lambda record: order.index(record.storage))


def find_backup(
    records: list[ArchivedBackup],
    backup_id: int,
    stack_uid: str | None,
    order: Sequence[str] = ("default",),
) -> ArchivedBackup:
    """The first copy (in `order` of destinations) of the one backup with this id; see
    `find_copies`."""
    return find_copies(records, backup_id, stack_uid, order)[0]


async def run_restore(
    settings: Settings,
    backup_id: int,
    *,
    stack_uid: str | None,
    output: str,
    identity: Path | None = None,
    force: bool = False,
    storage: str | None = None,
) -> int:
    """Restore one backup to `output` (a path, a folder or '-') from the first destination
    holding it (or `storage`); exit 0, 1 on a mismatch, 2 if unknown or if the output file
    exists without `force`."""
    if storage is not None:
        destination_named(settings, storage)  # an unknown name is exit 2, before anything
    async with open_archive(settings, lock=False) as archive, AsyncExitStack() as stack:
        order = [d.name for d in archive.destinations if storage in (None, d.name)]
        copies = find_copies(archive.state.archived.all(), backup_id, stack_uid, order)
        target = None if output == STDOUT else output_file(Path(output), copies[0], force=force)
        record, manifest = await _first_readable(archive, copies)
        destination = archive.destination(record.storage)
        # Closed here, whatever ends the restore (a closed pipe too), while the archive's
        # threads still run: a generator left to the garbage collector would close later.
        stored = await stack.enter_async_context(
            contextlib.aclosing(destination.storage.read_chunks(record.tar_key))
        )
        chunks: AsyncIterator[bytes] = stored
        if manifest.encrypted:
            identities = identities_for(settings, identity, destination.encryption)
            chunks = await stack.enter_async_context(
                contextlib.aclosing(_decrypted(stored, identities, backup_id))
            )
        try:
            if target is None:
                await _to_stdout(chunks, manifest)
            else:
                await _to_file(chunks, manifest, target, force=force)
        except RestoreMismatch as mismatch:
            log.error("restore failed: the data does not match its manifest",
                      backup_id=backup_id, storage=record.storage, problem=str(mismatch))
            print(f"c66-archiver: error: {mismatch} (the copy in {record.storage!r}"
                  f"{_others_hint(copies, record)})", file=sys.stderr)
            return EXIT_PARTIAL
    log.info("backup restored", backup_id=backup_id, stack_uid=record.stack_uid,
             storage=record.storage, size=manifest.size, sha256=manifest.sha256,
             output=str(target or output))
    return EXIT_OK


def output_file(path: Path, record: ArchivedBackup, *, force: bool) -> Path:
    """Where `--output` puts the file: the path, or in a folder the plaintext's name.

    An existing file there is a usage error (exit 2) unless `force`, checked now so
    that nothing is read in vain, and again when the file is put in place.
    """
    if path.is_dir():
        path = path / plaintext_name(record)
        if path.is_dir():
            raise ConfigError(f"--output {path} is a folder")
    if not force and (path.exists() or path.is_symlink()):
        raise ConfigError(_exists_message(path))
    return path


def plaintext_name(record: ArchivedBackup) -> str:
    """The restored file's name: the stored one without the encryption suffix."""
    return record.tar_key.rpartition("/")[2].removesuffix(ENCRYPTED_SUFFIX)


def _exists_message(path: Path) -> str:
    return f"--output {path} exists: not replaced (add --force to replace it)"


async def _first_readable(
    archive: Archive, copies: Sequence[ArchivedBackup]
) -> tuple[ArchivedBackup, Manifest]:
    """The first copy whose manifest reads, in the destinations' order: a copy lost from
    one destination (its manifest deleted outside the archiver) is no reason to fail."""
    problems = []
    for record in copies:
        try:
            return record, await _manifest(archive.destination(record.storage), record)
        except RestoreMismatch as problem:
            log.warning("cannot restore from this destination; trying the next",
                        backup_id=record.backup_id, storage=record.storage, problem=str(problem))
            problems.append(f"{problem} in {record.storage!r}")
    raise RestoreMismatch("; ".join(problems))


def _others_hint(copies: Sequence[ArchivedBackup], used: ArchivedBackup) -> str:
    others = [record.storage for record in copies if record is not used]
    return f"; other copies: --storage {' or '.join(others)}" if others else ""


async def _manifest(destination: Destination, record: ArchivedBackup) -> Manifest:
    try:
        return Manifest.from_json(await destination.storage.read_small(record.manifest_key))
    except FileNotFoundError:
        raise RestoreMismatch(f"the manifest of backup {record.backup_id} is missing") from None
    except (ValueError, KeyError, TypeError):
        raise RestoreMismatch(f"the manifest of backup {record.backup_id} is unreadable") from None


class _Checked:
    """Size and sha256 of what went through, compared with the manifest at the end."""

    def __init__(self, manifest: Manifest) -> None:
        self._manifest = manifest
        self._digest = hashlib.sha256()
        self.size = 0

    def add(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        self.size += len(chunk)

    def check(self) -> None:
        expected = self._manifest
        if self.size != expected.size:
            raise RestoreMismatch(f"got {self.size} bytes, the manifest says {expected.size}")
        if self._digest.hexdigest() != expected.sha256:
            raise RestoreMismatch("sha256 differs from the manifest")


async def _to_stdout(chunks: AsyncIterator[bytes], manifest: Manifest) -> None:
    """Stream to stdout; a BrokenPipeError (the reader went away) is left to the caller."""
    checked = _Checked(manifest)
    out = sys.stdout.buffer
    async for chunk in _read(chunks):
        await asyncio.to_thread(_hash_and_write, checked, chunk, out)
    await asyncio.to_thread(out.flush)
    checked.check()


async def _to_file(
    chunks: AsyncIterator[bytes], manifest: Manifest, path: Path, *, force: bool
) -> None:
    """Write to a temporary name beside `path`; put in place only when everything matched."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        descriptor = create_private_file(temporary, os.O_WRONLY)
    except OSError as error:
        raise ConfigError(f"--output {path}: cannot write there ({error.strerror})") from None
    try:
        with os.fdopen(descriptor, "wb") as out:
            checked = _Checked(manifest)
            async for chunk in _read(chunks):
                await asyncio.to_thread(_hash_and_write, checked, chunk, out)
            await asyncio.to_thread(_flush_and_sync, out)
        checked.check()
        await asyncio.to_thread(_publish, temporary, path, force)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


async def _decrypted(
    chunks: AsyncIterator[bytes], identities: list[Identity], backup_id: int
) -> AsyncGenerator[bytes, None]:
    """The plaintext of an age file, decrypted as it streams."""
    stream = AgeStream.decrypting(identities)
    try:
        async for chunk in chunks:
            if plaintext := await stream.feed(chunk):
                yield plaintext
        if rest := await stream.finish():
            yield rest
    except WrongIdentity:
        stream.abort()
        raise ConfigError(
            f"the identity cannot decrypt backup {backup_id} (it was encrypted to other keys)"
        ) from None
    except CorruptCiphertext as error:
        stream.abort()
        raise RestoreMismatch(str(error)) from None
    except BaseException:
        stream.abort()
        raise


async def _read(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The stored bytes; a missing object is a mismatch (its manifest says it exists)."""
    try:
        async for chunk in chunks:
            yield chunk
    except FileNotFoundError:
        raise RestoreMismatch("the archived file is missing") from None


def _hash_and_write(checked: _Checked, chunk: bytes, out: BinaryIO) -> None:
    """One worker-thread hop per chunk: hash it and write it from the same buffer."""
    checked.add(chunk)
    out.write(chunk)


def _publish(temporary: Path, path: Path, force: bool) -> None:
    """Put the file in place (never over another one unless `force`), durably."""
    if force:
        os.replace(temporary, path)
    else:
        _link_without_replacing(temporary, path)
    fsync_folder(path.absolute().parent)


def _link_without_replacing(temporary: Path, path: Path) -> None:
    """link(2) fails on an existing name, so no file that appeared meanwhile is replaced."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise ConfigError(_exists_message(path)) from None
    except OSError:
        # A file system without hard links: the check made before reading must do.
        if path.exists() or path.is_symlink():
            raise ConfigError(_exists_message(path)) from None
        os.replace(temporary, path)
        return
    temporary.unlink()


def _flush_and_sync(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())

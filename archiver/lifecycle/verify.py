"""Is what was archived still intact? Re-read stored objects and check them against manifests.

A check reads the manifest, then streams the stored object once: its size and
sha256 must be the manifest's. `deep` also reads the tar to its end (stdlib
`tarfile` in stream mode, in a worker thread fed chunk by chunk), and fails on
a truncated or garbled tar. Memory stays a few chunks whatever the size.

`select_backups` picks what a run checks: all, the Nth of M fixed groups (as
restic's `--read-data-subset N/M`: every backup in exactly one group, the same
group on every run), or a random percentage.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from archiver.config.keys import Identity
from archiver.core.errors import StorageError
from archiver.core.secrets import redact
from archiver.lifecycle.tar_check import TarChecker
from archiver.model.manifest import ArchivedBackup, Manifest
from archiver.storage.base import Storage
from archiver.storage.destinations import Destination
from archiver.transfer.encryption import AgeStream, CorruptCiphertext, WrongIdentity

ByteCallback = Callable[[int], None]


@dataclass(frozen=True)
class CheckResult:
    """One archived copy, checked: intact, or what is wrong with it."""

    record: ArchivedBackup
    problem: str | None
    location: str = ""  # where the copy is, as its destination names it now
    gone: bool = False  # its manifest is missing: by the contract, no copy is there

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return self.problem is None

    def as_dict(self) -> dict[str, Any]:
        """The contract's `verify --json` entry."""
        return {
            "stack_uid": self.record.stack_uid,
            "backup_id": self.record.backup_id,
            "storage": self.record.storage,
            "location": self.location,
            "ok": self.ok,
            "problem": self.problem,
        }


class _Corrupt(Exception):
    """Internal: the stored backup does not match its manifest (the message says how)."""


class _ManifestGone(_Corrupt):
    """Internal: the copy's manifest is missing, so the destination no longer holds it."""


def subset_group(record: ArchivedBackup, groups: int) -> int:
    """The 1-based group of `groups` a backup belongs to: fixed by its stack and id."""
    digest = hashlib.sha256(f"{record.stack_uid}\0{record.backup_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % groups + 1


def select_backups(
    records: Sequence[ArchivedBackup],
    *,
    subset: tuple[int, int] | None = None,
    percent: float | None = None,
    rng: random.Random | None = None,
) -> list[ArchivedBackup]:
    """All records, the subset's group (N of M), or a random `percent` (at least one)."""
    if subset is not None:
        number, groups = subset
        return [record for record in records if subset_group(record, groups) == number]
    if percent is not None and records:
        count = max(1, math.ceil(len(records) * percent / 100))
        chosen = (rng or random.SystemRandom()).sample(list(records), min(count, len(records)))
        return sorted(chosen, key=lambda r: (r.stack_uid, r.backup_date or "", r.backup_id))
    return list(records)


class Verifier:
    """Checks the archived copies in one destination against their manifests.

    Without `deep` only the stored bytes are read and hashed (no key needed, even
    for encrypted backups: their manifest has the stored file's sha256). With
    `deep`, an encrypted backup is decrypted with `identities` as it streams,
    and the plaintext's sha256 and tar are checked too.
    """

    def __init__(
        self,
        destination: Destination,
        executor: ThreadPoolExecutor,
        *,
        deep: bool = False,
        identities: Sequence[Identity] = (),
    ) -> None:
        self._destination = destination
        self._storage: Storage = destination.storage
        self._executor = executor
        self._deep = deep
        self._identities = list(identities)

    async def check(self, record: ArchivedBackup, on_bytes: ByteCallback) -> CheckResult:
        """Read the backup once; never raises for what it finds (it is in the result)."""
        location = self._destination.location(record.tar_key)
        try:
            await self._check(record, on_bytes)
        except _ManifestGone as gone:
            return CheckResult(record, str(gone), location, gone=True)
        except _Corrupt as corrupt:
            return CheckResult(record, str(corrupt), location)
        except (StorageError, OSError) as error:
            return CheckResult(record, f"could not be read: {redact(str(error))}", location)
        return CheckResult(record, None, location)

    async def _check(self, record: ArchivedBackup, on_bytes: ByteCallback) -> None:
        manifest = await self._manifest(record)
        info = await self._storage.stat(record.tar_key)
        if info is None:
            raise _Corrupt("the archived file is missing")
        expected = manifest.expected_stored_size
        if info.size != expected:
            how = "short" if info.size < expected else "too long"
            raise _Corrupt(f"{how}: {info.size} bytes, the manifest says {expected}")
        await self._read_and_check(record.tar_key, manifest, on_bytes)

    async def _manifest(self, record: ArchivedBackup) -> Manifest:
        try:
            return Manifest.from_json(await self._storage.read_small(record.manifest_key))
        except FileNotFoundError:
            raise _ManifestGone("the manifest is missing") from None
        except (ValueError, KeyError, TypeError):
            raise _Corrupt("the manifest is unreadable") from None

    async def _read_and_check(
        self, key: str, manifest: Manifest, on_bytes: ByteCallback
    ) -> None:
        """Stream `key` once: its sha256, and with `deep` the plaintext's sha256 and tar."""
        loop = asyncio.get_running_loop()
        stored = hashlib.sha256()
        plain = _PlaintextCheck(self._executor, manifest, self._identities) if self._deep else None
        read = 0
        try:
            async for chunk in self._storage.read_chunks(key):
                await loop.run_in_executor(self._executor, stored.update, chunk)
                if plain is not None:
                    await plain.feed(chunk)
                read += len(chunk)
                on_bytes(len(chunk))
        except FileNotFoundError:
            raise _Corrupt("the archived file is missing") from None
        finally:
            problem = await plain.finish() if plain is not None else None
        if read != manifest.expected_stored_size:
            raise _Corrupt(
                f"short: {read} bytes read, the manifest says {manifest.expected_stored_size}"
            )
        if stored.hexdigest() != manifest.expected_stored_sha256:
            raise _Corrupt("sha256 differs from the manifest")
        if problem is not None:
            raise _Corrupt(problem)


class _PlaintextCheck:
    """The deep check: decrypt when the backup is encrypted, then hash and read the tar."""

    def __init__(
        self, executor: ThreadPoolExecutor, manifest: Manifest, identities: list[Identity]
    ) -> None:
        self._executor = executor
        self._manifest = manifest
        self._decrypt = AgeStream.decrypting(identities) if manifest.encrypted else None
        self._digest = hashlib.sha256()
        self._tar = TarChecker(executor)
        self._failure: str | None = None

    async def feed(self, stored: bytes) -> None:
        """Take the next stored chunk."""
        if self._failure is not None:
            return
        try:
            plaintext = await self._decrypt.feed(stored) if self._decrypt else stored
        except (WrongIdentity, CorruptCiphertext) as error:
            self._failure = _decrypt_problem(error)
            return
        await self._plaintext(plaintext)

    async def _plaintext(self, data: bytes) -> None:
        if data:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._digest.update, data)
            await self._tar.feed(data)

    async def finish(self) -> str | None:
        """The verdict: None when the plaintext is whole, else what is wrong."""
        if self._decrypt is not None and self._failure is None:
            try:
                await self._plaintext(await self._decrypt.finish())
            except (WrongIdentity, CorruptCiphertext) as error:
                self._failure = _decrypt_problem(error)
        elif self._decrypt is not None:
            self._decrypt.abort()
        tar_problem = await self._tar.finish()
        if self._failure is not None:
            return self._failure
        if self._decrypt is not None and self._digest.hexdigest() != self._manifest.sha256:
            return "the decrypted backup's sha256 differs from the manifest"
        return tar_problem


def _decrypt_problem(error: Exception) -> str:
    if isinstance(error, WrongIdentity):
        return "cannot be decrypted with the given identity (encrypted to other keys?)"
    return f"cannot be decrypted: {error}"

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

from archiver.errors import StorageError
from archiver.log import redact
from archiver.manifest import ArchivedBackup, Manifest
from archiver.storage.base import Storage
from archiver.tar_check import TarChecker

ByteCallback = Callable[[int], None]


@dataclass(frozen=True)
class CheckResult:
    """One archived backup, checked: intact, or what is wrong with it."""

    record: ArchivedBackup
    problem: str | None

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return self.problem is None

    def as_dict(self) -> dict[str, Any]:
        """The contract's `verify --json` entry."""
        return {
            "stack_uid": self.record.stack_uid,
            "backup_id": self.record.backup_id,
            "location": self.record.location,
            "ok": self.ok,
            "problem": self.problem,
        }


class _Corrupt(Exception):
    """Internal: the stored backup does not match its manifest (the message says how)."""


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
    """Checks archived backups in one storage against their manifests."""

    def __init__(
        self, storage: Storage, executor: ThreadPoolExecutor, *, deep: bool = False
    ) -> None:
        self._storage = storage
        self._executor = executor
        self._deep = deep

    async def check(self, record: ArchivedBackup, on_bytes: ByteCallback) -> CheckResult:
        """Read the backup once; never raises for what it finds (it is in the result)."""
        try:
            await self._check(record, on_bytes)
        except _Corrupt as corrupt:
            return CheckResult(record, str(corrupt))
        except (StorageError, OSError) as error:
            return CheckResult(record, f"could not be read: {redact(str(error))}")
        return CheckResult(record, None)

    async def _check(self, record: ArchivedBackup, on_bytes: ByteCallback) -> None:
        manifest = await self._manifest(record)
        info = await self._storage.stat(record.tar_key)
        if info is None:
            raise _Corrupt("the archived file is missing")
        if info.size != manifest.size:
            how = "short" if info.size < manifest.size else "too long"
            raise _Corrupt(f"{how}: {info.size} bytes, the manifest says {manifest.size}")
        sha256 = await self._read_and_hash(record.tar_key, manifest.size, on_bytes)
        if sha256 != manifest.sha256:
            raise _Corrupt("sha256 differs from the manifest")

    async def _manifest(self, record: ArchivedBackup) -> Manifest:
        try:
            return Manifest.from_json(await self._storage.read_small(record.manifest_key))
        except FileNotFoundError:
            raise _Corrupt("the manifest is missing") from None
        except (ValueError, KeyError, TypeError):
            raise _Corrupt("the manifest is unreadable") from None

    async def _read_and_hash(self, key: str, size: int, on_bytes: ByteCallback) -> str:
        """Stream `key` through sha256 (and the tar check), hashing chunk k while k+1 is read."""
        loop = asyncio.get_running_loop()
        digest = hashlib.sha256()
        tar = TarChecker(self._executor) if self._deep else None
        read = 0
        try:
            async for chunk in self._storage.read_chunks(key):
                await loop.run_in_executor(self._executor, digest.update, chunk)
                if tar is not None:
                    await tar.feed(chunk)
                read += len(chunk)
                on_bytes(len(chunk))
        except FileNotFoundError:
            raise _Corrupt("the archived file is missing") from None
        finally:
            problem = await tar.finish() if tar is not None else None
        if read != size:
            raise _Corrupt(f"short: {read} bytes read, the manifest says {size}")
        if problem is not None:
            raise _Corrupt(problem)
        return digest.hexdigest()

"""The simulated Cloud 66 account: its settings, stacks and backups (with the part files
on disk that back them), the faults to inject and the counters of what was served.

The API and the blob host read everything they answer from one :class:`Account`.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import math
import secrets
import shutil
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from archiver.simulator.content import CHUNK_SIZE, TarFrame, part_ids, write_part
from archiver.simulator.records import (
    Backup,
    Faults,
    Gate,
    ImportRecord,
    Part,
    SimStats,
    Stack,
)


class Account:
    """In-memory Cloud 66 account (stacks, backups) plus the files on disk that back it."""

    def __init__(
        self,
        *,
        token: str = "sim-token",  # noqa: S107 - a throwaway default for local runs
        blob_dir: Path,
        part_size: int = 350_000_000,
        url_lifetime: float = 300.0,
        per_page: int = 30,
        account_id: int | None = None,
    ) -> None:
        if part_size <= 0 or per_page <= 0:
            raise ValueError("part_size and per_page must be positive")
        self.token = token
        self.blob_dir = Path(blob_dir)
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.part_size = part_size
        self.url_lifetime = url_lifetime
        self.per_page = per_page
        self.account_id = account_id
        self.faults = Faults()
        self.stats = SimStats()
        self.warning: str | None = None  # sent as X-Cloud66-Warning on every API answer
        self.requests_per_hour: int | None = None  # None: no rate limit
        self.signing_secret = secrets.token_bytes(20)  # per instance: URLs never outlive it
        self.api_window: collections.deque[float] = collections.deque()  # the last hour's
        # How Cloud 66's bucket keeps the backups: None, "AES256", "aws:kms",
        # "aws:kms:dsse" or "sse-c"; and whether they were multipart uploads. Both
        # change what the ETag is (see blobs.BlobHost._etag).
        self.s3_encryption: str | None = None
        self.multipart_etags = False
        # The link as a far-away S3 looks: each blob body paced to this many bytes/s
        # (one connection's share), and this many seconds before each blob answer.
        self.connection_rate: int | None = None
        self.latency = 0.0
        self.issued_signatures: list[str] = []  # of every public_url, in order
        self.revoked_signatures: set[str] = set()  # refused as expired from now on
        # What the token may do: Cloud 66's POSTs need "admin" (tests take it away).
        self.token_scopes: set[str] = {"public", "admin"}
        self.backup_tasks: list[dict[str, Any]] = []  # created by POST /stacks/<uid>/backups
        self.imports: list[ImportRecord] = []  # each fetched in the background
        # Cloud 66 keeps the last keep_count backups of each task and rotates older
        # ones away unannounced: stack uid -> count (see `set_keep_count`).
        self.keep_counts: dict[str, int] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        self._stacks: dict[str, Stack] = {}
        self._backups: dict[int, Backup] = {}
        self._next_id = 1

    def background(self, work: Any) -> None:
        """Run `work` (an import's fetch) beside the answer, keeping a reference to it."""
        task: asyncio.Future[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----------------------------------------------------------------- data set-up

    def add_stack(self, uid: str, name: str = "", environment: str = "production") -> None:
        """Create (or rename) a stack."""
        created = self._stacks[uid].created_at if uid in self._stacks else datetime.now(UTC)
        self._stacks[uid] = Stack(uid, name or uid, environment, created)

    def add_backup(
        self,
        stack_uid: str,
        *,
        db_type: str = "mysql",
        database_name: str = "app_db",
        size: int = 1024,
        status: int = 0,
        backup_date: datetime | None = None,
        backup_id: int | None = None,
        seed: int | None = None,
        legacy_part_names: bool = False,
        result: str | None = None,
    ) -> int:
        """Create a backup with ``size`` deterministic bytes split in parts; return its id.

        The stack is created if it does not exist. Without ``backup_date`` the backup is
        dated now (so it is the newest); without ``seed`` the id seeds the content.
        ``result`` is what a failed one (``status`` 1) says in ``backup_result``. With a
        keep_count on the stack, the series' oldest backups beyond it are rotated away.
        """
        if size < 0:
            raise ValueError("size must be >= 0")
        if stack_uid not in self._stacks:
            self.add_stack(stack_uid)
        backup_id = self._claim_id(backup_id)
        moment = backup_date or datetime.now(UTC).replace(microsecond=0)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        content_seed = backup_id if seed is None else seed
        parts = self._generate_parts(
            backup_id, database_name, size, content_seed, legacy_part_names
        )
        self._backups[backup_id] = Backup(
            backup_id, stack_uid, db_type, database_name, status, moment, size, content_seed,
            parts, result=result,
        )
        self._rotate(stack_uid)
        return backup_id

    def add_series(
        self,
        stack_uid: str,
        dates: Sequence[datetime],
        *,
        sizes: Sequence[int] | int = 1024,
        db_type: str = "mysql",
        database_name: str = "app_db",
        failed: Collection[int] = (),
    ) -> list[int]:
        """One backup per date (e.g. from `cadence`), oldest first; return the ids, oldest first.

        `sizes` per backup in the order of `dates` (or one for all), so a shrinking
        dump is `[100_000] * 5 + [30_000]` with the newest date last. `failed`:
        indexes into `dates` of backups that failed in Cloud 66 (status 1).
        """
        sized = [sizes] * len(dates) if isinstance(sizes, int) else list(sizes)
        if len(sized) != len(dates):
            raise ValueError("give one size, or one per date")
        order = sorted(range(len(dates)), key=lambda n: dates[n])
        return [
            self.add_backup(
                stack_uid, db_type=db_type, database_name=database_name, size=sized[n],
                backup_date=dates[n], status=1 if n in failed else 0,
            )
            for n in order
        ]

    def set_keep_count(self, stack_uid: str, keep_count: int | None) -> list[int]:
        """Keep only the newest `keep_count` backups of each of the stack's series, as a
        Cloud 66 backup task does (None: keep all); return the ids rotated away now."""
        if keep_count is None:
            self.keep_counts.pop(stack_uid, None)
            return []
        if keep_count < 1:
            raise ValueError("keep_count must be at least 1")
        self.keep_counts[stack_uid] = keep_count
        return self._rotate(stack_uid)

    def _rotate(self, stack_uid: str) -> list[int]:
        """Remove each series' backups beyond the stack's keep_count, oldest first."""
        keep = self.keep_counts.get(stack_uid)
        if keep is None:
            return []
        by_series: dict[tuple[str, str, str], list[Backup]] = collections.defaultdict(list)
        for backup in self.sorted_backups(stack_uid):  # newest first
            by_series[backup.series].append(backup)
        rotated = sorted(
            (b for backups in by_series.values() for b in backups[keep:]),
            key=lambda b: (b.backup_date, b.id),
        )
        for backup in rotated:
            self.remove_backup(backup.id)
        return [backup.id for backup in rotated]

    def _claim_id(self, backup_id: int | None) -> int:
        """The id of a new backup: the next free one, or ``backup_id`` unless it is taken."""
        if backup_id is None:
            backup_id = self._next_id
        elif backup_id in self._backups:
            raise ValueError(f"backup id {backup_id} already exists")
        if backup_id >= self._next_id:  # a reserved id leaves it alone: no race with the loop
            self._next_id = backup_id + 1
        return backup_id

    async def add_backup_async(self, stack_uid: str, **options: Any) -> int:
        """:meth:`add_backup` in a worker thread, so a running server keeps answering
        while a big backup is generated. The id is reserved here, in the loop's thread."""
        if options.get("backup_id") is None:
            options["backup_id"] = self._next_id
            self._next_id += 1
        return await asyncio.to_thread(functools.partial(self.add_backup, stack_uid, **options))

    def _generate_parts(
        self, backup_id: int, database_name: str, size: int, seed: int, legacy: bool
    ) -> list[Part]:
        """Write the part files, several at once: hashing releases the GIL, so big backups
        generate at well over 500 MB/s on two cores."""
        count = max(1, math.ceil(size / self.part_size))
        folder = self.blob_dir / f"backup-{backup_id}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        ids = part_ids(count, database_name, legacy)
        bounds = [(n * self.part_size, min(size, (n + 1) * self.part_size)) for n in range(count)]
        paths = [folder / f"part-{n:04d}" for n in range(count)]
        frame = TarFrame.around(size, f"{database_name}.sql.gz")
        with ThreadPoolExecutor(max_workers=4) as pool:
            md5s = list(
                pool.map(lambda n: write_part(paths[n], seed, *bounds[n], frame), range(count))
            )
        return [
            Part(file_id, name, paths[n], bounds[n][1] - bounds[n][0], md5s[n])
            for n, (file_id, name) in enumerate(ids)
        ]

    def expire_issued_urls(self) -> None:
        """Every URL issued so far is refused as expired from now on (new ones work)."""
        self.revoked_signatures.update(self.issued_signatures)

    def remove_backup(self, backup_id: int) -> None:
        """Forget a backup and delete its files (as Cloud 66 rotates old backups out)."""
        self._backups.pop(backup_id)
        shutil.rmtree(self.blob_dir / f"backup-{backup_id}", ignore_errors=True)

    # ------------------------------------------------------------------- look-ups

    def backup_content_path(self, backup_id: int) -> list[Path]:
        """The part files of a backup, in order (their concatenation is the backup)."""
        return [part.path for part in self._backups[backup_id].parts]

    def part_md5s(self, backup_id: int) -> dict[str, str]:
        """Hex MD5 (= ETag without quotes) of each part, by file id."""
        return {part.file_id: part.md5 for part in self._backups[backup_id].parts}

    def expected_sha256(self, backup_id: int) -> str:
        """SHA-256 of the joined backup (computed from the files once, then cached)."""
        backup = self._backups[backup_id]
        if backup.sha256 is None:
            digest = hashlib.sha256()
            for part in backup.parts:
                with part.path.open("rb") as source:
                    while block := source.read(CHUNK_SIZE):
                        digest.update(block)
            backup.sha256 = digest.hexdigest()
        return backup.sha256

    def stack_uids(self) -> list[str]:
        """Every stack's uid, in the order they were added."""
        return list(self._stacks)

    def backup_ids(self, stack_uid: str) -> list[int]:
        """Ids of a stack's backups, newest first (the API's order)."""
        return [b.id for b in self.sorted_backups(stack_uid)]

    def stacks(self) -> list[Stack]:
        """Every stack, in the order they were added."""
        return list(self._stacks.values())

    def find_stack(self, uid: str) -> Stack | None:
        """The stack with this uid, if there is one."""
        return self._stacks.get(uid)

    def find_backup(self, backup_id: int) -> Backup | None:
        """The backup with this id (of any stack), if there is one."""
        return self._backups.get(backup_id)

    def gate(self, backup_id: int, part_index: int) -> Gate:
        """Hold the blob GETs of one part of a backup at a new gate, to be opened by the caller."""
        gate = Gate()
        self.faults.gates[(backup_id, self._backups[backup_id].parts[part_index].file_id)] = gate
        return gate

    def sorted_backups(self, stack_uid: str) -> list[Backup]:
        """A stack's backups, newest first (the API's order)."""
        # list() copies in one step: add_backup_async may add a backup from its thread.
        backups = [b for b in list(self._backups.values()) if b.stack_uid == stack_uid]
        return sorted(backups, key=lambda b: (b.backup_date, b.id), reverse=True)

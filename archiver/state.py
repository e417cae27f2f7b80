"""The record of what is archived: SQLite (stdlib), crash-safe, plus the instance lock.

WAL with `synchronous=FULL`: each archived backup is one small transaction,
durable once `record_archived` returns, so a crash or kill -9 never loses a
backup whose manifest was written, nor leaves half a record. The manifests in
storage remain the source of truth: a missing or new database is rebuilt from
them (`archiver.rebuild`). Persistence only: this module reads no storage.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import asdict, astuple, dataclass, fields
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import structlog

from archiver.errors import ArchiverError, LockHeld
from archiver.manifest import ArchivedBackup
from archiver.private_files import FILE_MODE, create_private_file, make_private_folders

DB_NAME = "state.sqlite3"
_KEPT_RUNS = 100

log = structlog.get_logger(__name__)

# One entry per schema version; PRAGMA user_version says how many have run.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE archived (
        stack_uid TEXT NOT NULL,
        backup_id INTEGER NOT NULL,
        db_type TEXT NOT NULL,
        database_name TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        location TEXT NOT NULL,
        archived_at TEXT NOT NULL,
        tar_key TEXT NOT NULL,
        manifest_key TEXT NOT NULL,
        backup_date TEXT,
        PRIMARY KEY (stack_uid, backup_id)
    );
    CREATE TABLE skipped (
        stack_uid TEXT NOT NULL,
        backup_id INTEGER NOT NULL,
        reason TEXT NOT NULL,
        PRIMARY KEY (stack_uid, backup_id)
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        started_at TEXT NOT NULL,
        finished_at TEXT NOT NULL,
        ok INTEGER NOT NULL,
        archived INTEGER NOT NULL,
        skipped INTEGER NOT NULL,
        failed TEXT NOT NULL,
        bytes INTEGER NOT NULL
    );
    CREATE TABLE stack_success (stack_uid TEXT PRIMARY KEY, at TEXT NOT NULL);
    CREATE TABLE api_requests (at REAL NOT NULL);
    CREATE INDEX api_requests_at ON api_requests (at);
    """,
    # Retention and verify: what was pruned (never downloaded again), what was checked.
    """
    CREATE TABLE pruned (
        stack_uid TEXT NOT NULL,
        backup_id INTEGER NOT NULL,
        db_type TEXT NOT NULL,
        database_name TEXT NOT NULL,
        backup_date TEXT,
        tar_key TEXT NOT NULL,
        manifest_key TEXT NOT NULL,
        pruned_at TEXT NOT NULL,
        complete INTEGER NOT NULL,
        PRIMARY KEY (stack_uid, backup_id)
    );
    CREATE TABLE verified (
        stack_uid TEXT NOT NULL,
        backup_id INTEGER NOT NULL,
        verified_at TEXT NOT NULL,
        ok INTEGER NOT NULL,
        problem TEXT,
        deep INTEGER NOT NULL,
        PRIMARY KEY (stack_uid, backup_id)
    );
    CREATE TABLE verify_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        finished_at TEXT NOT NULL,
        checked INTEGER NOT NULL,
        failed INTEGER NOT NULL
    );
    """,
    # Transfers under way: what a later pass needs to resume one (its parts so far).
    """
    CREATE TABLE transfers (
        stack_uid TEXT NOT NULL,
        backup_id INTEGER NOT NULL,
        tar_key TEXT NOT NULL,
        started_at TEXT NOT NULL,
        parts TEXT NOT NULL,
        PRIMARY KEY (stack_uid, backup_id)
    );
    """,
    # Commits under way: data about to reach (or at) its final name, its manifest not yet.
    """
    CREATE TABLE commits (
        stack_uid TEXT NOT NULL,
        backup_id INTEGER NOT NULL,
        tar_key TEXT NOT NULL,
        manifest_key TEXT NOT NULL,
        manifest TEXT NOT NULL,
        PRIMARY KEY (stack_uid, backup_id)
    );
    """,
)

_ARCHIVED_FIELDS = tuple(field.name for field in fields(ArchivedBackup))
_ARCHIVED_COLUMNS = ", ".join(_ARCHIVED_FIELDS)
_INSERT_ARCHIVED = (
    f"INSERT OR REPLACE INTO archived ({_ARCHIVED_COLUMNS})"  # noqa: S608 columns are constants
    f" VALUES ({', '.join('?' for _ in _ARCHIVED_FIELDS)})"
)


@dataclass(frozen=True)
class PrunedBackup:
    """A backup removed by retention: never downloaded again. `complete` once its data is gone."""

    stack_uid: str
    backup_id: int
    db_type: str
    database_name: str
    backup_date: str | None
    tar_key: str
    manifest_key: str
    pruned_at: str
    complete: bool


@dataclass(frozen=True)
class TransferPart:
    """A part of a transfer under way, as its first answer described it."""

    id: str
    size: int
    etag: str | None
    md5: str | None  # the MD5 its bytes must have, when the ETag proved one


@dataclass(frozen=True)
class Transfer:
    """A backup being transferred: its key and the parts known so far, in order."""

    stack_uid: str
    backup_id: int
    tar_key: str
    started_at: str
    parts: list[TransferPart]


@dataclass(frozen=True)
class PendingCommit:
    """A backup whose data is committed (or about to be) and whose manifest is not written yet.

    `manifest` is the manifest to write (JSON), so a later pass can finish the commit.
    """

    stack_uid: str
    backup_id: int
    tar_key: str
    manifest_key: str
    manifest: str


@dataclass(frozen=True)
class Verification:
    """The last check of one archived backup."""

    stack_uid: str
    backup_id: int
    verified_at: str
    ok: bool
    problem: str | None
    deep: bool


@dataclass(frozen=True)
class VerifyRun:
    """One `verify` run: when it finished, how many backups it checked, how many failed."""

    finished_at: str
    checked: int
    failed: int


_PRUNED_COLUMNS = (
    "stack_uid, backup_id, db_type, database_name, backup_date, tar_key, manifest_key,"
    " pruned_at, complete"
)
_INSERT_PRUNED = (
    f"INSERT OR REPLACE INTO pruned ({_PRUNED_COLUMNS})"  # noqa: S608 columns are constants
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class RunRecord:
    """The outcome of one pass, as `status` shows it."""

    started_at: str
    finished_at: str
    ok: bool
    archived: int
    skipped: int
    failed: list[dict[str, object]]  # [{"stack_uid", "backup_id", "reason"}]
    bytes: int


def state_db_path(path: Path) -> Path:
    """`[state] path` is a folder (existing, or without a suffix) or the database file."""
    if path.is_dir() or not path.suffix:
        return path / DB_NAME
    return path


def _touch_private(path: Path) -> bool:
    """Create `path` 0600 if missing (before SQLite would create it 0644); True if created."""
    try:
        os.close(create_private_file(path, os.O_WRONLY))
    except FileExistsError:
        return False
    return True


class StateStore:
    """What is archived, what was skipped, how passes went; one SQLite file."""

    def __init__(self, path: Path, connection: sqlite3.Connection, *, created: bool) -> None:
        self.path = path
        self.created = created
        self._connection = connection
        # The connection may be used from worker threads (asyncio.to_thread); one at a time.
        self._mutex = threading.RLock()
        self._lock_descriptor: int | None = None

    @classmethod
    def open(cls, path: Path) -> StateStore:
        """Open (creating if needed) the state at `path`; see `state_db_path`."""
        db_path = state_db_path(path)
        try:
            make_private_folders(db_path.parent)
            new_file = _touch_private(db_path)
        except OSError as error:
            raise ArchiverError(
                f"state database {db_path} cannot be created: {error.strerror}"
            ) from error
        connection, fresh_schema = _open_database(db_path)
        # A file created but never given a schema (a crash in the first open) is new too.
        return cls(db_path, connection, created=new_file or fresh_schema)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""
        with self._mutex:
            cursor = self._connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")

    def _query(self, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self._mutex:
            return self._connection.execute(sql, parameters).fetchall()

    # --- the instance lock -------------------------------------------------

    @property
    def lock_path(self) -> Path:
        """`<db>.lock`: flock'ed by the running instance, holding its pid."""
        return self.path.with_name(self.path.name + ".lock")

    def acquire_lock(self) -> None:
        """Take the instance lock or raise LockHeld naming the holder's pid."""
        if self._lock_descriptor is not None:
            return
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        descriptor = os.open(self.lock_path, flags, FILE_MODE)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(descriptor)
            raise LockHeld(
                f"another c66-archiver instance holds the state lock {self.lock_path} "
                f"(pid {holder})"
            ) from None
        os.fchmod(descriptor, FILE_MODE)
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode("ascii"), 0)
        self._lock_descriptor = descriptor

    def release_lock(self) -> None:
        """Drop the instance lock (the file stays: unlinking it would race a new holder)."""
        descriptor, self._lock_descriptor = self._lock_descriptor, None
        if descriptor is None:
            return
        os.ftruncate(descriptor, 0)
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)

    # --- archived backups --------------------------------------------------

    def is_archived(self, stack_uid: str, backup_id: int) -> bool:
        """True when this backup has been archived (its manifest written)."""
        rows = self._query(
            "SELECT 1 FROM archived WHERE stack_uid = ? AND backup_id = ?", (stack_uid, backup_id)
        )
        return bool(rows)

    def archived_ids(self, stack_uid: str) -> set[int]:
        """Ids of every archived backup of a stack, in one query (for planning)."""
        rows = self._query("SELECT backup_id FROM archived WHERE stack_uid = ?", (stack_uid,))
        return {int(row[0]) for row in rows}

    def record_archived(self, record: ArchivedBackup) -> None:
        """Insert or replace one archived backup, in one durable transaction."""
        with self._transaction() as cursor:
            cursor.execute(_INSERT_ARCHIVED, astuple(record))
            for table in ("transfers", "commits"):  # the commit is complete, its transfer over
                cursor.execute(
                    f"DELETE FROM {table} WHERE stack_uid = ? AND backup_id = ?",  # noqa: S608
                    (record.stack_uid, record.backup_id),
                )
            # Archived now: a skip noted earlier (e.g. a failed attempt) no longer applies.
            cursor.execute(
                "DELETE FROM skipped WHERE stack_uid = ? AND backup_id = ?",
                (record.stack_uid, record.backup_id),
            )

    def archived(self) -> list[ArchivedBackup]:
        """Every archived backup, ordered by stack, backup date, backup id."""
        rows = self._query(
            f"SELECT {_ARCHIVED_COLUMNS} FROM archived"  # noqa: S608 constant
            " ORDER BY stack_uid, backup_date, backup_id"
        )
        return [_archived_from_row(row) for row in rows]

    def forget(self, stack_uid: str, backup_id: int) -> None:
        """Drop one backup from the record (e.g. after pruning it from storage)."""
        with self._transaction() as cursor:
            cursor.execute(
                "DELETE FROM archived WHERE stack_uid = ? AND backup_id = ?",
                (stack_uid, backup_id),
            )

    # --- pruned backups (retention) -----------------------------------------

    def record_pruned(self, pruned: PrunedBackup) -> None:
        """Note a pruned backup (or its completion) and drop it from the archived ones, at once."""
        with self._transaction() as cursor:
            cursor.execute(_INSERT_PRUNED, (*astuple(pruned)[:-1], int(pruned.complete)))
            cursor.execute(
                "DELETE FROM archived WHERE stack_uid = ? AND backup_id = ?",
                (pruned.stack_uid, pruned.backup_id),
            )
            cursor.execute(
                "DELETE FROM verified WHERE stack_uid = ? AND backup_id = ?",
                (pruned.stack_uid, pruned.backup_id),
            )

    def pruned_ids(self, stack_uid: str) -> set[int]:
        """Ids of a stack's pruned backups: never to be downloaded again."""
        rows = self._query("SELECT backup_id FROM pruned WHERE stack_uid = ?", (stack_uid,))
        return {int(row[0]) for row in rows}

    def unfinished_prunes(self) -> list[PrunedBackup]:
        """Pruned backups whose manifest or data may still be in storage (a crash mid-prune)."""
        rows = self._query(
            f"SELECT {_PRUNED_COLUMNS} FROM pruned"  # noqa: S608 constant
            " WHERE complete = 0 ORDER BY stack_uid, backup_id"
        )
        return [_pruned_from_row(row) for row in rows]

    def pruned_days(self, since: datetime) -> dict[str, set[date]]:
        """Per stack, the UTC days (from `since` on) whose backups retention removed."""
        rows = self._query(
            "SELECT stack_uid, backup_date FROM pruned WHERE backup_date >= ?",
            (since.strftime("%Y-%m-%d"),),
        )
        days: dict[str, set[date]] = {}
        for stack_uid, backup_date in rows:
            with contextlib.suppress(ValueError, TypeError):
                day = datetime.fromisoformat(backup_date).astimezone(UTC).date()
                days.setdefault(stack_uid, set()).add(day)
        return days

    def pruned_count(self) -> int:
        """How many backups retention has removed, ever."""
        return int(self._query("SELECT COUNT(*) FROM pruned")[0][0])

    # --- transfers under way (for resume) -------------------------------------

    def begin_transfer(self, stack_uid: str, backup_id: int, tar_key: str, at: str) -> None:
        """A transfer starts afresh (forgetting any earlier one of the backup)."""
        with self._transaction() as cursor:
            cursor.execute(
                "INSERT OR REPLACE INTO transfers (stack_uid, backup_id, tar_key, started_at,"
                " parts) VALUES (?, ?, ?, ?, '[]')",
                (stack_uid, backup_id, tar_key, at),
            )

    def note_transfer_part(
        self, stack_uid: str, backup_id: int, index: int, part: TransferPart
    ) -> None:
        """Remember part `index` of a transfer (its size and ETag, once its answer came)."""
        with self._transaction() as cursor:
            rows = cursor.execute(
                "SELECT parts FROM transfers WHERE stack_uid = ? AND backup_id = ?",
                (stack_uid, backup_id),
            ).fetchall()
            if not rows:
                return
            parts = json.loads(rows[0][0])[:index]
            parts.append(asdict(part))
            cursor.execute(
                "UPDATE transfers SET parts = ? WHERE stack_uid = ? AND backup_id = ?",
                (json.dumps(parts), stack_uid, backup_id),
            )

    def transfer(self, stack_uid: str, backup_id: int) -> Transfer | None:
        """The transfer of a backup left under way, if any."""
        rows = self._query(
            "SELECT stack_uid, backup_id, tar_key, started_at, parts FROM transfers"
            " WHERE stack_uid = ? AND backup_id = ?",
            (stack_uid, backup_id),
        )
        return _transfer_from_row(rows[0]) if rows else None

    def transfers(self) -> list[Transfer]:
        """Every transfer left under way."""
        rows = self._query(
            "SELECT stack_uid, backup_id, tar_key, started_at, parts FROM transfers"
        )
        return [_transfer_from_row(row) for row in rows]

    def end_transfer(self, stack_uid: str, backup_id: int) -> None:
        """The transfer is over (archived, or its unfinished upload gone)."""
        with self._transaction() as cursor:
            cursor.execute(
                "DELETE FROM transfers WHERE stack_uid = ? AND backup_id = ?",
                (stack_uid, backup_id),
            )

    # --- commits under way (data committed, manifest not yet) ----------------

    def begin_commit(self, pending: PendingCommit) -> None:
        """Remember a commit before its data reaches the final name (replacing an older one)."""
        with self._transaction() as cursor:
            cursor.execute(
                "INSERT OR REPLACE INTO commits (stack_uid, backup_id, tar_key, manifest_key,"
                " manifest) VALUES (?, ?, ?, ?, ?)",
                astuple(pending),
            )

    def pending_commits(self) -> list[PendingCommit]:
        """Commits an earlier pass or process left unfinished."""
        rows = self._query(
            "SELECT stack_uid, backup_id, tar_key, manifest_key, manifest FROM commits"
            " ORDER BY stack_uid, backup_id"
        )
        return [PendingCommit(row[0], int(row[1]), *row[2:]) for row in rows]

    def end_commit(self, stack_uid: str, backup_id: int) -> None:
        """The commit was undone (or found never to have reached storage): forget it."""
        with self._transaction() as cursor:
            cursor.execute(
                "DELETE FROM commits WHERE stack_uid = ? AND backup_id = ?", (stack_uid, backup_id)
            )

    # --- verification --------------------------------------------------------

    def record_verification(self, results: list[Verification], run: VerifyRun) -> None:
        """Each backup's latest check, and the run as a whole, in one transaction."""
        with self._transaction() as cursor:
            cursor.executemany(
                "INSERT OR REPLACE INTO verified (stack_uid, backup_id, verified_at, ok, problem,"
                " deep) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (r.stack_uid, r.backup_id, r.verified_at, int(r.ok), r.problem, int(r.deep))
                    for r in results
                ],
            )
            cursor.execute(
                "INSERT INTO verify_runs (finished_at, checked, failed) VALUES (?, ?, ?)",
                astuple(run),
            )
            cursor.execute(
                "DELETE FROM verify_runs WHERE id <= (SELECT MAX(id) FROM verify_runs) - ?",
                (_KEPT_RUNS,),
            )

    def verifications(self) -> dict[tuple[str, int], Verification]:
        """The latest check of every archived backup that has been checked."""
        rows = self._query(
            "SELECT stack_uid, backup_id, verified_at, ok, problem, deep FROM verified"
        )
        return {
            (row[0], int(row[1])): Verification(
                row[0], int(row[1]), row[2], bool(row[3]), row[4], bool(row[5])
            )
            for row in rows
        }

    def last_verify_run(self) -> VerifyRun | None:
        """The most recent `verify` run, or None before the first."""
        rows = self._query(
            "SELECT finished_at, checked, failed FROM verify_runs ORDER BY id DESC LIMIT 1"
        )
        return VerifyRun(*rows[0]) if rows else None

    def note_skipped(self, stack_uid: str, backup_id: int, reason: str) -> bool:
        """Remember a skipped backup; True only the first time (so it is logged once)."""
        with self._transaction() as cursor:
            cursor.execute(
                "INSERT OR IGNORE INTO skipped (stack_uid, backup_id, reason) VALUES (?, ?, ?)",
                (stack_uid, backup_id, reason),
            )
            return cursor.rowcount == 1

    # --- passes ------------------------------------------------------------

    def record_run(self, run: RunRecord) -> None:
        """Store a pass's outcome, keeping the last few."""
        with self._transaction() as cursor:
            cursor.execute(
                "INSERT INTO runs (started_at, finished_at, ok, archived, skipped, failed, bytes)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    run.started_at,
                    run.finished_at,
                    int(run.ok),
                    run.archived,
                    run.skipped,
                    json.dumps(run.failed, default=str),
                    run.bytes,
                ),
            )
            cursor.execute(
                "DELETE FROM runs WHERE id <= (SELECT MAX(id) FROM runs) - ?", (_KEPT_RUNS,)
            )

    def last_run(self) -> RunRecord | None:
        """The most recent pass, or None before the first."""
        rows = self._query(
            "SELECT started_at, finished_at, ok, archived, skipped, failed, bytes"
            " FROM runs ORDER BY id DESC LIMIT 1"
        )
        if not rows:
            return None
        started_at, finished_at, ok, archived, skipped, failed, size = rows[0]
        return RunRecord(
            started_at=started_at,
            finished_at=finished_at,
            ok=bool(ok),
            archived=archived,
            skipped=skipped,
            failed=json.loads(failed),
            bytes=size,
        )

    def record_stack_success(self, stack_uid: str, at: datetime) -> None:
        """Note that every due backup of `stack_uid` was archived at `at`."""
        with self._transaction() as cursor:
            cursor.execute(
                "INSERT OR REPLACE INTO stack_success (stack_uid, at) VALUES (?, ?)",
                (stack_uid, at.isoformat()),
            )

    def last_success_at(self, stack_uid: str | None = None) -> datetime | None:
        """When the last good pass finished (or, per stack, its last success)."""
        if stack_uid is None:
            rows = self._query("SELECT finished_at FROM runs WHERE ok = 1 ORDER BY id DESC LIMIT 1")
        else:
            rows = self._query("SELECT at FROM stack_success WHERE stack_uid = ?", (stack_uid,))
        return datetime.fromisoformat(rows[0][0]) if rows else None

    def stack_successes(self) -> dict[str, datetime]:
        """Every stack's last success (see `record_stack_success`), by stack uid."""
        rows = self._query("SELECT stack_uid, at FROM stack_success")
        return {str(uid): datetime.fromisoformat(at) for uid, at in rows}

    def archived_count(self) -> int:
        """How many backups are archived (one cheap query, for metrics)."""
        return int(self._query("SELECT COUNT(*) FROM archived")[0][0])

    def size_bytes(self) -> int:
        """Bytes on disk of the database, its WAL and shared-memory files included."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    # --- the API request budget ----------------------------------------------

    def add_api_request_time(self, at: float) -> None:
        """Remember one API request (epoch seconds), so a restart keeps the hourly budget."""
        with self._transaction() as cursor:
            cursor.execute("INSERT INTO api_requests (at) VALUES (?)", (at,))

    def api_request_times(self, since: float) -> list[float]:
        """Times of the requests made at or after `since`, oldest first."""
        rows = self._query("SELECT at FROM api_requests WHERE at >= ? ORDER BY at", (since,))
        return [float(row[0]) for row in rows]

    def prune_api_request_times(self, before: float) -> None:
        """Forget requests older than `before`."""
        with self._transaction() as cursor:
            cursor.execute("DELETE FROM api_requests WHERE at < ?", (before,))

    def close(self) -> None:
        """Release the lock and close the database."""
        self.release_lock()
        with self._mutex:
            self._connection.close()


def _open_database(db_path: Path) -> tuple[sqlite3.Connection, bool]:
    """Connect and migrate; True when the schema was created now. Corruption is an ArchiverError."""
    connection = None
    try:
        connection = _connect(db_path)
        return connection, _migrate(connection, db_path)
    except (sqlite3.Error, ArchiverError) as error:
        if connection is not None:
            connection.close()
        if isinstance(error, ArchiverError):
            raise
        raise ArchiverError(f"state database {db_path} is unreadable: {error}") from error


def _connect(db_path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (we BEGIN ourselves), WAL, synchronous=FULL."""
    connection = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 5000")
    if connection.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
        raise sqlite3.DatabaseError("cannot switch to WAL journal mode")
    connection.execute("PRAGMA synchronous = FULL")
    return connection


def _migrate(connection: sqlite3.Connection, db_path: Path) -> bool:
    """Bring the schema to the latest version; True when it started empty."""
    version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    if version > len(_MIGRATIONS):
        raise ArchiverError(
            f"state database {db_path} has schema version {version}, newer than this "
            f"program knows ({len(_MIGRATIONS)}): upgrade c66-archiver"
        )
    for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
        # executescript commits first, so the DDL and the version bump run as one script.
        connection.executescript(
            f"BEGIN IMMEDIATE; {script}; PRAGMA user_version = {number}; COMMIT;"
        )
    return version == 0


def _transfer_from_row(row: tuple[Any, ...]) -> Transfer:
    stack_uid, backup_id, tar_key, started_at, parts = row
    return Transfer(
        stack_uid, int(backup_id), tar_key, started_at,
        [TransferPart(**part) for part in json.loads(parts)],
    )


def _pruned_from_row(row: tuple[Any, ...]) -> PrunedBackup:
    """Columns in `_PRUNED_COLUMNS` order -> the record."""
    stack_uid, backup_id, db_type, database_name, backup_date, tar_key, manifest_key = row[:7]
    pruned_at, complete = row[7:]
    return PrunedBackup(
        stack_uid, int(backup_id), db_type, database_name, backup_date, tar_key, manifest_key,
        pruned_at, bool(complete),
    )


def _archived_from_row(row: tuple[Any, ...]) -> ArchivedBackup:
    """Columns in `_ARCHIVED_COLUMNS` order -> the record (the names match the fields)."""
    return ArchivedBackup(**dict(zip(_ARCHIVED_FIELDS, row, strict=True)))

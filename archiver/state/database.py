"""The state's SQLite file: opened, migrated, and used in short transactions.

WAL with `synchronous=FULL`: each change is one small transaction, durable once
it returns, so a crash or kill -9 never loses a record nor leaves half of one.
Other processes (`status`, `verify`, `prune` beside a daemon) read and write
the same file; `busy_timeout` makes a writer wait its turn instead of failing.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from archiver.core.errors import ArchiverError
from archiver.core.private_files import create_private_file, make_private_folders
from archiver.state.schema import MIGRATIONS

DB_NAME = "state.sqlite3"


def state_db_path(path: Path) -> Path:
    """`[state] path` is a folder (existing, or without a suffix) or the database file."""
    if path.is_dir() or not path.suffix:
        return path / DB_NAME
    return path


class Database:
    """One connection, shared by the tables of the state, used by one thread at a time."""

    def __init__(self, path: Path, connection: sqlite3.Connection, *, created: bool) -> None:
        self.path = path
        self.created = created
        self._connection = connection
        # The connection may be used from worker threads (asyncio.to_thread); one at a time.
        self._mutex = threading.RLock()

    @classmethod
    def open(cls, db_path: Path) -> Database:
        """Open (creating if needed) the database file and bring its schema up to date."""
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

    @classmethod
    def in_memory(cls) -> Database:
        """An empty database that lives in memory only: what "no state yet" reads as."""
        connection = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        _migrate(connection, Path(":memory:"))
        return cls(Path(":memory:"), connection, created=True)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
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

    def query(self, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """Every row of one read."""
        with self._mutex:
            return self._connection.execute(sql, parameters).fetchall()

    def size_bytes(self) -> int:
        """Bytes on disk of the database, its WAL and shared-memory files included."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    def close(self) -> None:
        """Close the connection."""
        with self._mutex:
            self._connection.close()


def _touch_private(path: Path) -> bool:
    """Create `path` 0600 if missing (before SQLite would create it 0644); True if created."""
    try:
        os.close(create_private_file(path, os.O_WRONLY))
    except FileExistsError:
        return False
    return True


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
    """Bring the schema to the latest version; True when it started empty (this open made it).

    Two processes may open a new state at once (a daemon starting, `status` beside
    it): the one that migrates holds the write lock throughout, and the other,
    waiting for it (busy_timeout), reads the version again and finds the work done.
    """
    if _schema_version(connection, db_path) == len(MIGRATIONS):
        return False  # the usual open: nothing to do, no write lock taken
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = _schema_version(connection, db_path)
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in _statements(script):
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {number}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return version == 0


def _schema_version(connection: sqlite3.Connection, db_path: Path) -> int:
    version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    if version > len(MIGRATIONS):
        raise ArchiverError(
            f"state database {db_path} has schema version {version}, newer than this "
            f"program knows ({len(MIGRATIONS)}): upgrade c66-archiver"
        )
    return version


def _statements(script: str) -> list[str]:
    """A migration's statements one by one, so they run inside the caller's transaction
    (`executescript` would commit first). `complete_statement` keeps a trigger's body whole."""
    statements, current = [], ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip().strip(";").strip():
                statements.append(current)
            current = ""
    return statements

"""Backups retention removed, per destination: never filled in there again, drawn on the page.

Each destination's storage keeps a tombstone of each too (`pruned.json`, see
`archiver.lifecycle.prune`), so a state rebuilt from storage still knows them.
"""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, date, datetime
from typing import Any

from archiver.state.archived import forget_copy
from archiver.state.database import Database
from archiver.state.records import PrunedBackup

_COLUMNS = (
    "stack_uid, backup_id, db_type, database_name, backup_date, tar_key, manifest_key,"
    " pruned_at, complete, storage"
)
_INSERT = (
    f"INSERT OR REPLACE INTO pruned ({_COLUMNS})"  # noqa: S608 columns are constants
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class PrunedBackups:
    """The pruned copies, and which of them may still have bytes in storage."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def record(self, pruned: PrunedBackup) -> None:
        """Note a pruned copy (or its completion) and drop it from the archived ones, at once."""
        with self._db.transaction() as cursor:
            record_prune(cursor, pruned)

    def ids(self, stack_uid: str) -> set[int]:
        """Ids of a stack's backups pruned from some destination."""
        rows = self._db.query(
            "SELECT DISTINCT backup_id FROM pruned WHERE stack_uid = ?", (stack_uid,)
        )
        return {int(row[0]) for row in rows}

    def pruned_from(self, stack_uid: str) -> dict[int, set[str]]:
        """Backup id -> the destinations that pruned it (never filled in there again)."""
        rows = self._db.query(
            "SELECT backup_id, storage FROM pruned WHERE stack_uid = ?", (stack_uid,)
        )
        found: dict[int, set[str]] = {}
        for backup_id, storage in rows:
            found.setdefault(int(backup_id), set()).add(str(storage))
        return found

    def unfinished(self, storage: str | None = None) -> list[PrunedBackup]:
        """Pruned copies whose manifest or data may still be in storage (a crash mid-prune)."""
        where = "complete = 0" + ("" if storage is None else " AND storage = ?")
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM pruned WHERE {where}"  # noqa: S608 constant
            " ORDER BY stack_uid, backup_id, storage",
            () if storage is None else (storage,),
        )
        return [_from_row(row) for row in rows]

    def keys(self) -> set[tuple[str, int, str]]:
        """Every (stack uid, backup id, destination) pruned."""
        rows = self._db.query("SELECT stack_uid, backup_id, storage FROM pruned")
        return {(str(uid), int(backup_id), str(storage)) for uid, backup_id, storage in rows}

    def days(self, since: datetime, storage: str | None = None) -> dict[str, set[date]]:
        """Per stack, the UTC days (from `since` on) whose backups retention removed (from
        one destination, or any)."""
        where = "" if storage is None else " AND storage = ?"
        rows = self._db.query(
            f"SELECT stack_uid, backup_date FROM pruned WHERE backup_date >= ?{where}",  # noqa: S608
            (since.strftime("%Y-%m-%d"), *(() if storage is None else (storage,))),
        )
        days: dict[str, set[date]] = {}
        for stack_uid, backup_date in rows:
            with contextlib.suppress(ValueError, TypeError):
                day = datetime.fromisoformat(backup_date).astimezone(UTC).date()
                days.setdefault(stack_uid, set()).add(day)
        return days

    def count(self) -> int:
        """How many backups retention has removed from some destination, ever."""
        rows = self._db.query(
            "SELECT COUNT(*) FROM (SELECT DISTINCT stack_uid, backup_id FROM pruned)"
        )
        return int(rows[0][0])


def record_prune(cursor: sqlite3.Cursor, pruned: PrunedBackup) -> None:
    """Within a transaction: note a pruned copy and drop it from the archived ones."""
    key = (pruned.stack_uid, pruned.backup_id)
    cursor.execute(
        _INSERT,
        (*key, pruned.db_type, pruned.database_name, pruned.backup_date, pruned.tar_key,
         pruned.manifest_key, pruned.pruned_at, int(pruned.complete), pruned.storage),
    )
    forget_copy(cursor, *key, pruned.storage)
    cursor.execute(
        "DELETE FROM verified WHERE stack_uid = ? AND backup_id = ? AND storage = ?",
        (*key, pruned.storage),
    )


def _from_row(row: tuple[Any, ...]) -> PrunedBackup:
    """Columns in `_COLUMNS` order -> the record."""
    stack_uid, backup_id, db_type, database_name, backup_date, tar_key, manifest_key = row[:7]
    pruned_at, complete, storage = row[7:]
    return PrunedBackup(
        stack_uid, int(backup_id), db_type, database_name, backup_date, tar_key, manifest_key,
        pruned_at, bool(complete), storage,
    )

"""Backups retention removed: never downloaded again, and drawn as pruned on the page.

Storage keeps a tombstone of each too (`pruned.json`, see `archiver.lifecycle.prune`),
so a state rebuilt from storage still knows them.
"""

from __future__ import annotations

import contextlib
from dataclasses import astuple
from datetime import UTC, date, datetime
from typing import Any

from archiver.state.database import Database
from archiver.state.records import PrunedBackup

_COLUMNS = (
    "stack_uid, backup_id, db_type, database_name, backup_date, tar_key, manifest_key,"
    " pruned_at, complete"
)
_INSERT = (
    f"INSERT OR REPLACE INTO pruned ({_COLUMNS})"  # noqa: S608 columns are constants
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class PrunedBackups:
    """The pruned backups, and which of them may still have bytes in storage."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def record(self, pruned: PrunedBackup) -> None:
        """Note a pruned backup (or its completion) and drop it from the archived ones, at once."""
        key = (pruned.stack_uid, pruned.backup_id)
        with self._db.transaction() as cursor:
            cursor.execute(_INSERT, (*astuple(pruned)[:-1], int(pruned.complete)))
            cursor.execute("DELETE FROM archived WHERE stack_uid = ? AND backup_id = ?", key)
            cursor.execute("DELETE FROM verified WHERE stack_uid = ? AND backup_id = ?", key)

    def ids(self, stack_uid: str) -> set[int]:
        """Ids of a stack's pruned backups: never to be downloaded again."""
        rows = self._db.query("SELECT backup_id FROM pruned WHERE stack_uid = ?", (stack_uid,))
        return {int(row[0]) for row in rows}

    def unfinished(self) -> list[PrunedBackup]:
        """Pruned backups whose manifest or data may still be in storage (a crash mid-prune)."""
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM pruned"  # noqa: S608 constant
            " WHERE complete = 0 ORDER BY stack_uid, backup_id"
        )
        return [_from_row(row) for row in rows]

    def days(self, since: datetime) -> dict[str, set[date]]:
        """Per stack, the UTC days (from `since` on) whose backups retention removed."""
        rows = self._db.query(
            "SELECT stack_uid, backup_date FROM pruned WHERE backup_date >= ?",
            (since.strftime("%Y-%m-%d"),),
        )
        days: dict[str, set[date]] = {}
        for stack_uid, backup_date in rows:
            with contextlib.suppress(ValueError, TypeError):
                day = datetime.fromisoformat(backup_date).astimezone(UTC).date()
                days.setdefault(stack_uid, set()).add(day)
        return days

    def count(self) -> int:
        """How many backups retention has removed, ever."""
        return int(self._db.query("SELECT COUNT(*) FROM pruned")[0][0])


def _from_row(row: tuple[Any, ...]) -> PrunedBackup:
    """Columns in `_COLUMNS` order -> the record."""
    stack_uid, backup_id, db_type, database_name, backup_date, tar_key, manifest_key = row[:7]
    pruned_at, complete = row[7:]
    return PrunedBackup(
        stack_uid, int(backup_id), db_type, database_name, backup_date, tar_key, manifest_key,
        pruned_at, bool(complete),
    )

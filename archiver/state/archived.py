"""The archived backups: one row each, written once its manifest is in storage."""

from __future__ import annotations

from dataclasses import astuple, fields
from typing import Any

from archiver.model.manifest import ArchivedBackup
from archiver.state.database import Database

_FIELDS = tuple(field.name for field in fields(ArchivedBackup))
_COLUMNS = ", ".join(_FIELDS)
_INSERT = (
    f"INSERT OR REPLACE INTO archived ({_COLUMNS})"  # noqa: S608 columns are constants
    f" VALUES ({', '.join('?' for _ in _FIELDS)})"
)


class ArchivedBackups:
    """What is archived: the source of `status`, retention and verify."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def contains(self, stack_uid: str, backup_id: int) -> bool:
        """True when this backup has been archived (its manifest written)."""
        rows = self._db.query(
            "SELECT 1 FROM archived WHERE stack_uid = ? AND backup_id = ?", (stack_uid, backup_id)
        )
        return bool(rows)

    def ids(self, stack_uid: str) -> set[int]:
        """Ids of every archived backup of a stack, in one query (for planning)."""
        rows = self._db.query("SELECT backup_id FROM archived WHERE stack_uid = ?", (stack_uid,))
        return {int(row[0]) for row in rows}

    def record(self, record: ArchivedBackup) -> None:
        """Insert or replace one archived backup, in one durable transaction.

        Its transfer and commit records and any skip noted earlier (a failed attempt)
        go in the same transaction: they no longer apply.
        """
        key = (record.stack_uid, record.backup_id)
        with self._db.transaction() as cursor:
            cursor.execute(_INSERT, astuple(record))
            cursor.execute("DELETE FROM transfers WHERE stack_uid = ? AND backup_id = ?", key)
            cursor.execute("DELETE FROM commits WHERE stack_uid = ? AND backup_id = ?", key)
            cursor.execute("DELETE FROM skipped WHERE stack_uid = ? AND backup_id = ?", key)

    def all(self) -> list[ArchivedBackup]:
        """Every archived backup, ordered by stack, backup date, backup id."""
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM archived"  # noqa: S608 constant
            " ORDER BY stack_uid, backup_date, backup_id"
        )
        return [_from_row(row) for row in rows]

    def forget(self, stack_uid: str, backup_id: int) -> None:
        """Drop one backup from the record (e.g. after pruning it from storage)."""
        with self._db.transaction() as cursor:
            cursor.execute(
                "DELETE FROM archived WHERE stack_uid = ? AND backup_id = ?",
                (stack_uid, backup_id),
            )

    def count(self) -> int:
        """How many backups are archived (one cheap query, for metrics)."""
        return int(self._db.query("SELECT COUNT(*) FROM archived")[0][0])


def _from_row(row: tuple[Any, ...]) -> ArchivedBackup:
    """Columns in `_COLUMNS` order -> the record (the names match the fields)."""
    return ArchivedBackup(**dict(zip(_FIELDS, row, strict=True)))

"""Good backups the watch has seen listed: cheap rows (id, series, date) per stack.

They tell a backup that vanished from Cloud 66 before it was archived (missed), and
give each series the dates its cadence is inferred from. A row is `gone` once its
backup is no longer listed; gone rows are kept only as long as a series' cadence
needs them (the watch forgets the rest).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from archiver.state.database import Database

_COLUMNS = "stack_uid, backup_id, db_type, database_name, backup_date, listing, gone"


@dataclass(frozen=True)
class SeenBackup:
    """A good backup seen listed. `listing`: the list it was seen in (the stack's group)."""

    stack_uid: str
    backup_id: int
    db_type: str
    database_name: str
    backup_date: str | None
    listing: str
    gone: bool = False

    @property
    def series(self) -> tuple[str, str, str]:
        """(stack_uid, db_type, database_name)."""
        return (self.stack_uid, self.db_type, self.database_name)


class SeenBackups:
    """The good backups seen listed, by stack."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def remember(self, seen: Iterable[SeenBackup]) -> None:
        """Insert or refresh rows of backups listed now (a listed backup is not gone).

        Each write is a durable transaction: callers pass only rows that changed.
        """
        rows = [
            (s.stack_uid, s.backup_id, s.db_type, s.database_name, s.backup_date, s.listing)
            for s in seen
        ]
        if not rows:
            return
        with self._db.transaction() as cursor:
            cursor.executemany(
                f"INSERT OR REPLACE INTO watch_seen ({_COLUMNS})"  # noqa: S608 constant
                " VALUES (?, ?, ?, ?, ?, ?, 0)",
                rows,
            )

    def of_stack(self, stack_uid: str) -> list[SeenBackup]:
        """Every row of a stack, gone ones included."""
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM watch_seen WHERE stack_uid = ?",  # noqa: S608 constant
            (stack_uid,),
        )
        return [_from_row(row) for row in rows]

    def mark_gone(self, stack_uid: str, backup_ids: Iterable[int]) -> None:
        """These backups are no longer listed."""
        keys = [(stack_uid, backup_id) for backup_id in backup_ids]
        if not keys:
            return
        with self._db.transaction() as cursor:
            cursor.executemany(
                "UPDATE watch_seen SET gone = 1 WHERE stack_uid = ? AND backup_id = ?", keys
            )

    def forget(self, stack_uid: str, backup_ids: Iterable[int]) -> None:
        """Drop these rows (no longer needed, or of a series no longer watched)."""
        keys = [(stack_uid, backup_id) for backup_id in backup_ids]
        if not keys:
            return
        with self._db.transaction() as cursor:
            cursor.executemany("DELETE FROM watch_seen WHERE stack_uid = ? AND backup_id = ?", keys)

    def forget_stacks_except(self, stack_uids: Iterable[str]) -> None:
        """Drop the rows of every stack not in `stack_uids` (no longer archived)."""
        keep = list(stack_uids)
        marks = ", ".join("?" for _ in keep)
        with self._db.transaction() as cursor:
            cursor.execute(
                f"DELETE FROM watch_seen WHERE stack_uid NOT IN ({marks})",  # noqa: S608 marks
                keep,
            )

    def forget_all(self) -> None:
        """Drop every row (the watch was turned off)."""
        with self._db.transaction() as cursor:
            cursor.execute("DELETE FROM watch_seen")


def _from_row(row: tuple[Any, ...]) -> SeenBackup:
    stack_uid, backup_id, db_type, database_name, backup_date, listing, gone = row
    return SeenBackup(
        str(stack_uid), int(backup_id), str(db_type), str(database_name),
        None if backup_date is None else str(backup_date), str(listing), bool(gone),
    )

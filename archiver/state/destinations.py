"""The destinations the state has read, and the rows from before there were several.

A destination the state has not read yet (a new state, a destination added to
the config, or renamed), or whose place changed since it was read (another path,
bucket, server or type under the same name), is read whole
(`archiver.lifecycle.destinations`): its manifests and tombstones become its
copies and prunes here, replacing what the state said of it. Rows written before
destinations had names belong to the destination '' until they are handed to
the one they came from.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from archiver.model.manifest import ArchivedBackup
from archiver.state.archived import record_copy
from archiver.state.database import Database
from archiver.state.records import PrunedBackup
from archiver.state.tombstones import record_prune

LEGACY = ""
_PER_DESTINATION = ("copies", "pruned", "verified", "commits")


class DestinationRecords:
    """Which destinations the state knows, and the hand-over of rows from before."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def scanned(self) -> set[str]:
        """The destinations whose objects the state has read."""
        return set(self.places())

    def places(self) -> dict[str, str | None]:
        """Destination -> where it was when the state read it (None: read before places were
        remembered)."""
        rows = self._db.query("SELECT name, place FROM destinations")
        return {str(name): None if place is None else str(place) for name, place in rows}

    def note_place(self, name: str, place: str) -> None:
        """Remember where `name`, already read, is (for rows read before places were kept)."""
        with self._db.transaction() as cursor:
            cursor.execute("UPDATE destinations SET place = ? WHERE name = ?", (place, name))

    def replace(
        self, name: str, place: str, at: str,
        copies: Sequence[ArchivedBackup], prunes: Sequence[PrunedBackup],
    ) -> None:
        """`name`, read whole at `place`, holds exactly `copies` and pruned `prunes`: its rows
        are replaced by them in one transaction (a crash leaves the old ones, read again)."""
        with self._db.transaction() as cursor:
            _delete_rows_of(cursor, name)
            for pruned in prunes:
                record_prune(cursor, pruned)
            for copy in copies:
                record_copy(cursor, copy)
            cursor.execute(
                "INSERT OR REPLACE INTO destinations (name, scanned_at, place) VALUES (?, ?, ?)",
                (name, at, place),
            )

    def known(self) -> set[str]:
        """Every destination name some row belongs to ('' for rows from before names)."""
        names: set[str] = set()
        for table in _PER_DESTINATION:
            rows = self._db.query(f"SELECT DISTINCT storage FROM {table}")  # noqa: S608 constant
            names.update(str(row[0]) for row in rows)
        return names | self.scanned()

    def legacy_sample(self) -> tuple[str, str] | None:
        """(location, tar key) of one copy from before names: where the old destination was."""
        rows = self._db.query("SELECT location, tar_key FROM legacy_location LIMIT 1")
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    def rename(self, old: str, new: str, at: str) -> None:
        """Hand every row of destination `old` to `new`, which counts as read."""
        with self._db.transaction() as cursor:
            for table in _PER_DESTINATION:
                cursor.execute(
                    f"UPDATE OR REPLACE {table} SET storage = ? WHERE storage = ?",  # noqa: S608
                    (new, old),
                )
            cursor.execute("DELETE FROM legacy_location")
            cursor.execute(
                "INSERT OR REPLACE INTO destinations (name, scanned_at) VALUES (?, ?)", (new, at)
            )

    def forget(self, name: str) -> None:
        """Drop every row of a destination no longer configured (storage keeps the truth)."""
        with self._db.transaction() as cursor:
            _delete_rows_of(cursor, name)
            cursor.execute("DELETE FROM destinations WHERE name = ?", (name,))
            if name == LEGACY:
                cursor.execute("DELETE FROM legacy_location")


def _delete_rows_of(cursor: sqlite3.Cursor, name: str) -> None:
    """Within a transaction: drop every row of destination `name`, and backups left with no
    copy anywhere."""
    for table in _PER_DESTINATION:
        cursor.execute(f"DELETE FROM {table} WHERE storage = ?", (name,))  # noqa: S608
    cursor.execute(
        "DELETE FROM archived WHERE NOT EXISTS (SELECT 1 FROM copies c WHERE"
        " c.stack_uid = archived.stack_uid AND c.backup_id = archived.backup_id)"
    )

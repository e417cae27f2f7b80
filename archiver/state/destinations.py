"""The destinations the state has read, and the rows from before there were several.

A destination the state has not read yet (a new state, a destination added to
the config, or renamed) is read whole once (`archiver.lifecycle.destinations`):
its manifests and tombstones become copies and prunes here. Rows written before
destinations had names belong to the destination '' until they are handed to
the one they came from.
"""

from __future__ import annotations

from archiver.state.database import Database

LEGACY = ""
_PER_DESTINATION = ("copies", "pruned", "verified", "commits")


class DestinationRecords:
    """Which destinations the state knows, and the hand-over of rows from before."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def scanned(self) -> set[str]:
        """The destinations whose objects the state has read."""
        return {str(row[0]) for row in self._db.query("SELECT name FROM destinations")}

    def mark_scanned(self, name: str, at: str) -> None:
        """`name` has been read whole: its copies and prunes are in the state."""
        with self._db.transaction() as cursor:
            cursor.execute(
                "INSERT OR REPLACE INTO destinations (name, scanned_at) VALUES (?, ?)", (name, at)
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
            for table in _PER_DESTINATION:
                cursor.execute(f"DELETE FROM {table} WHERE storage = ?", (name,))  # noqa: S608
            cursor.execute(
                "DELETE FROM archived WHERE NOT EXISTS (SELECT 1 FROM copies c WHERE"
                " c.stack_uid = archived.stack_uid AND c.backup_id = archived.backup_id)"
            )
            cursor.execute("DELETE FROM destinations WHERE name = ?", (name,))
            if name == LEGACY:
                cursor.execute("DELETE FROM legacy_location")

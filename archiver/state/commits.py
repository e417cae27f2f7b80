"""Commits under way: a backup's data at (or about to reach) its final name, its manifest not
yet written (see `archiver.transfer.commit`)."""

from __future__ import annotations

from dataclasses import astuple

from archiver.state.database import Database
from archiver.state.records import PendingCommit


class PendingCommits:
    """One row a backup between its data commit and its manifest, with the manifest to write."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def begin(self, pending: PendingCommit) -> None:
        """Remember a commit before its data reaches the final name (replacing an older one)."""
        with self._db.transaction() as cursor:
            cursor.execute(
                "INSERT OR REPLACE INTO commits (stack_uid, backup_id, tar_key, manifest_key,"
                " manifest) VALUES (?, ?, ?, ?, ?)",
                astuple(pending),
            )

    def all(self) -> list[PendingCommit]:
        """Commits an earlier pass or process left unfinished."""
        rows = self._db.query(
            "SELECT stack_uid, backup_id, tar_key, manifest_key, manifest FROM commits"
            " ORDER BY stack_uid, backup_id"
        )
        return [PendingCommit(row[0], int(row[1]), *row[2:]) for row in rows]

    def end(self, stack_uid: str, backup_id: int) -> None:
        """The commit was undone (or found never to have reached storage): forget it."""
        with self._db.transaction() as cursor:
            cursor.execute(
                "DELETE FROM commits WHERE stack_uid = ? AND backup_id = ?", (stack_uid, backup_id)
            )

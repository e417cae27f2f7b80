"""Commits under way: a backup's data at (or about to reach) its final name in a destination,
its manifest not yet written there (see `archiver.transfer.commit`)."""

from __future__ import annotations

from dataclasses import astuple

from archiver.state.database import Database
from archiver.state.records import PendingCommit


class PendingCommits:
    """One row a copy between its data commit and its manifest, with the manifest to write."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def begin(self, pending: PendingCommit) -> None:
        """Remember a commit before its data reaches the final name (replacing an older one)."""
        with self._db.transaction() as cursor:
            cursor.execute(
                "INSERT OR REPLACE INTO commits (stack_uid, backup_id, tar_key, manifest_key,"
                " manifest, storage) VALUES (?, ?, ?, ?, ?, ?)",
                astuple(pending),
            )

    def all(self, storage: str | None = None) -> list[PendingCommit]:
        """Commits an earlier pass or process left unfinished (in one destination, or all)."""
        columns = "stack_uid, backup_id, tar_key, manifest_key, manifest, storage"
        order = " ORDER BY stack_uid, backup_id, storage"
        if storage is None:
            rows = self._db.query(f"SELECT {columns} FROM commits{order}")  # noqa: S608
        else:
            rows = self._db.query(
                f"SELECT {columns} FROM commits WHERE storage = ?{order}",  # noqa: S608
                (storage,),
            )
        return [PendingCommit(row[0], int(row[1]), *row[2:]) for row in rows]

    def end(self, stack_uid: str, backup_id: int, storage: str) -> None:
        """The commit was undone (or found never to have reached storage): forget it."""
        with self._db.transaction() as cursor:
            cursor.execute(
                "DELETE FROM commits WHERE stack_uid = ? AND backup_id = ? AND storage = ?",
                (stack_uid, backup_id, storage),
            )

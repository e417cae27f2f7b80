"""The archived backups: one row a backup, one `copies` row per destination holding it.

A copy is written once its manifest is in that destination. A backup is archived
while at least one copy is left; its row goes with its last copy.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from archiver.model.manifest import ArchivedBackup
from archiver.state.database import Database

_SELECT = (
    "SELECT a.stack_uid, a.backup_id, a.db_type, a.database_name, a.size, a.sha256,"
    " c.archived_at, c.tar_key, c.manifest_key, a.backup_date, c.storage, c.locked_until"
    " FROM archived a JOIN copies c"
    " ON c.stack_uid = a.stack_uid AND c.backup_id = a.backup_id"
)
_ORDER = " ORDER BY a.stack_uid, a.backup_date, a.backup_id, c.storage"


class ArchivedBackups:
    """What is archived where: the source of `status`, retention and verify."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def contains(self, stack_uid: str, backup_id: int) -> bool:
        """True when some destination holds this backup (its manifest written there)."""
        rows = self._db.query(
            "SELECT 1 FROM copies WHERE stack_uid = ? AND backup_id = ?", (stack_uid, backup_id)
        )
        return bool(rows)

    def ids(self, stack_uid: str) -> set[int]:
        """Ids of every backup of a stack that some destination holds, in one query."""
        rows = self._db.query(
            "SELECT DISTINCT backup_id FROM copies WHERE stack_uid = ?", (stack_uid,)
        )
        return {int(row[0]) for row in rows}

    def holders(self, stack_uid: str) -> dict[int, set[str]]:
        """Backup id -> the destinations holding it, for one stack (for planning)."""
        rows = self._db.query(
            "SELECT backup_id, storage FROM copies WHERE stack_uid = ?", (stack_uid,)
        )
        holders: dict[int, set[str]] = {}
        for backup_id, storage in rows:
            holders.setdefault(int(backup_id), set()).add(str(storage))
        return holders

    def record(self, record: ArchivedBackup) -> None:
        """Insert or replace one copy (and its backup), in one durable transaction.

        Its transfer and commit records and any skip noted earlier (a failed attempt)
        go in the same transaction: they no longer apply.
        """
        with self._db.transaction() as cursor:
            record_copy(cursor, record)

    def all(
        self, storage: str | None = None, *, stack_uid: str | None = None
    ) -> list[ArchivedBackup]:
        """Every copy (of one destination and one stack, or all), ordered by stack, date, id,
        destination."""
        conditions, parameters = [], []
        for column, value in (("c.storage", storage), ("c.stack_uid", stack_uid)):
            if value is not None:
                conditions.append(f"{column} = ?")
                parameters.append(value)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = self._db.query(_SELECT + where + _ORDER, tuple(parameters))
        return [_from_row(row) for row in rows]

    def backups(self) -> list[ArchivedBackup]:
        """One record per archived backup (its first copy by destination name): the backup's
        facts, for what counts backups rather than copies (the watch)."""
        seen: set[tuple[str, int]] = set()
        found = []
        for record in self.all():
            if (record.stack_uid, record.backup_id) not in seen:
                seen.add((record.stack_uid, record.backup_id))
                found.append(record)
        return found

    def note_lock(self, stack_uid: str, backup_id: int, storage: str, until: str) -> None:
        """Remember until when Object Lock keeps a copy."""
        with self._db.transaction() as cursor:
            cursor.execute(
                "UPDATE copies SET locked_until = ? WHERE stack_uid = ? AND backup_id = ?"
                " AND storage = ?",
                (until, stack_uid, backup_id, storage),
            )

    def forget(self, stack_uid: str, backup_id: int, storage: str) -> None:
        """Drop one copy from the record (e.g. after pruning it); the backup with its last."""
        with self._db.transaction() as cursor:
            forget_copy(cursor, stack_uid, backup_id, storage)

    def count(self) -> int:
        """How many backups some destination holds (one cheap query, for metrics)."""
        return int(self._db.query("SELECT COUNT(*) FROM archived")[0][0])

    def missing_in(self, storage: str) -> int:
        """How many backups some destination holds that `storage` lacks and did not prune
        (what a later pass fills in there)."""
        rows = self._db.query(
            "SELECT COUNT(*) FROM archived a WHERE NOT EXISTS (SELECT 1 FROM copies c"
            " WHERE c.stack_uid = a.stack_uid AND c.backup_id = a.backup_id AND c.storage = ?)"
            " AND NOT EXISTS (SELECT 1 FROM pruned p WHERE p.stack_uid = a.stack_uid"
            " AND p.backup_id = a.backup_id AND p.storage = ?)",
            (storage, storage),
        )
        return int(rows[0][0])

    def per_storage(self) -> dict[str, tuple[int, int]]:
        """Destination -> (copies, bytes) it holds."""
        rows = self._db.query(
            "SELECT c.storage, COUNT(*), COALESCE(SUM(a.size), 0) FROM copies c JOIN archived a"
            " ON a.stack_uid = c.stack_uid AND a.backup_id = c.backup_id GROUP BY c.storage"
        )
        return {str(storage): (int(count), int(size)) for storage, count, size in rows}


def record_copy(cursor: sqlite3.Cursor, record: ArchivedBackup) -> None:
    """Within a transaction: insert or replace one copy and its backup (see `record`)."""
    key = (record.stack_uid, record.backup_id)
    # The backup's facts as the newest manifest says; archived_at stays the first copy's.
    cursor.execute(
        "INSERT INTO archived (stack_uid, backup_id, db_type, database_name, size,"
        " sha256, archived_at, backup_date) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (stack_uid, backup_id) DO UPDATE SET db_type = excluded.db_type,"
        " database_name = excluded.database_name, size = excluded.size,"
        " sha256 = excluded.sha256, backup_date = excluded.backup_date",
        (*key, record.db_type, record.database_name, record.size, record.sha256,
         record.archived_at, record.backup_date),
    )
    cursor.execute(
        "INSERT OR REPLACE INTO copies (stack_uid, backup_id, storage, tar_key,"
        " manifest_key, archived_at, locked_until) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (*key, record.storage, record.tar_key, record.manifest_key, record.archived_at,
         record.locked_until),
    )
    cursor.execute("DELETE FROM transfers WHERE stack_uid = ? AND backup_id = ?", key)
    cursor.execute(
        "DELETE FROM commits WHERE stack_uid = ? AND backup_id = ? AND storage = ?",
        (*key, record.storage),
    )
    cursor.execute("DELETE FROM skipped WHERE stack_uid = ? AND backup_id = ?", key)


def forget_copy(cursor: sqlite3.Cursor, stack_uid: str, backup_id: int, storage: str) -> None:
    """Within a transaction: drop one copy, and the backup's row when no copy is left."""
    key = (stack_uid, backup_id)
    cursor.execute(
        "DELETE FROM copies WHERE stack_uid = ? AND backup_id = ? AND storage = ?",
        (*key, storage),
    )
    cursor.execute(
        "DELETE FROM archived WHERE stack_uid = ? AND backup_id = ? AND NOT EXISTS"
        " (SELECT 1 FROM copies WHERE stack_uid = ? AND backup_id = ?)",
        (*key, *key),
    )


def _from_row(row: tuple[Any, ...]) -> ArchivedBackup:
    stack_uid, backup_id, db_type, database_name, size, sha256 = row[:6]
    archived_at, tar_key, manifest_key, backup_date, storage, locked_until = row[6:]
    return ArchivedBackup(
        stack_uid=stack_uid, backup_id=int(backup_id), db_type=db_type,
        database_name=database_name, size=int(size), sha256=sha256, archived_at=archived_at,
        tar_key=tar_key, manifest_key=manifest_key, backup_date=backup_date, storage=storage,
        locked_until=locked_until,
    )

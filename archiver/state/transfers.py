"""Transfers under way: what a later pass (or process) needs to resume one."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from archiver.state.database import Database
from archiver.state.records import Transfer, TransferPart

_SELECT = "SELECT stack_uid, backup_id, tar_key, started_at, parts FROM transfers"


class Transfers:
    """One row a backup under way, with the parts known so far (size, ETag, MD5)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def begin(self, stack_uid: str, backup_id: int, tar_key: str, at: str) -> None:
        """A transfer starts afresh (forgetting any earlier one of the backup)."""
        with self._db.transaction() as cursor:
            cursor.execute(
                "INSERT OR REPLACE INTO transfers (stack_uid, backup_id, tar_key, started_at,"
                " parts) VALUES (?, ?, ?, ?, '[]')",
                (stack_uid, backup_id, tar_key, at),
            )

    def note_part(self, stack_uid: str, backup_id: int, index: int, part: TransferPart) -> None:
        """Remember part `index` of a transfer (its size and ETag, once its answer came)."""
        key = (stack_uid, backup_id)
        with self._db.transaction() as cursor:
            rows = cursor.execute(
                "SELECT parts FROM transfers WHERE stack_uid = ? AND backup_id = ?", key
            ).fetchall()
            if not rows:
                return
            parts = json.loads(rows[0][0])[:index]
            parts.append(asdict(part))
            cursor.execute(
                "UPDATE transfers SET parts = ? WHERE stack_uid = ? AND backup_id = ?",
                (json.dumps(parts), *key),
            )

    def get(self, stack_uid: str, backup_id: int) -> Transfer | None:
        """The transfer of a backup left under way, if any."""
        rows = self._db.query(
            f"{_SELECT} WHERE stack_uid = ? AND backup_id = ?", (stack_uid, backup_id)
        )
        return _from_row(rows[0]) if rows else None

    def all(self) -> list[Transfer]:
        """Every transfer left under way."""
        return [_from_row(row) for row in self._db.query(_SELECT)]

    def end(self, stack_uid: str, backup_id: int) -> None:
        """The transfer is over (archived, or its unfinished upload gone)."""
        with self._db.transaction() as cursor:
            cursor.execute(
                "DELETE FROM transfers WHERE stack_uid = ? AND backup_id = ?",
                (stack_uid, backup_id),
            )


def _from_row(row: tuple[Any, ...]) -> Transfer:
    stack_uid, backup_id, tar_key, started_at, parts = row
    return Transfer(
        stack_uid, int(backup_id), tar_key, started_at,
        [TransferPart(**part) for part in json.loads(parts)],
    )

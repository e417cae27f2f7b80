"""How passes went: their outcomes, each stack's last success, backups skipped upstream."""

from __future__ import annotations

import json
from datetime import datetime

from archiver.state.database import Database
from archiver.state.records import RunRecord

KEPT_RUNS = 100


class PassHistory:
    """The last passes, per-stack successes (freshness), and skips noted once."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def record(self, run: RunRecord) -> None:
        """Store a pass's outcome, keeping the last few."""
        with self._db.transaction() as cursor:
            cursor.execute(
                "INSERT INTO runs (started_at, finished_at, ok, archived, skipped, failed, bytes)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    run.started_at,
                    run.finished_at,
                    int(run.ok),
                    run.archived,
                    run.skipped,
                    json.dumps(run.failed, default=str),
                    run.bytes,
                ),
            )
            cursor.execute(
                "DELETE FROM runs WHERE id <= (SELECT MAX(id) FROM runs) - ?", (KEPT_RUNS,)
            )

    def last(self) -> RunRecord | None:
        """The most recent pass, or None before the first."""
        rows = self._db.query(
            "SELECT started_at, finished_at, ok, archived, skipped, failed, bytes"
            " FROM runs ORDER BY id DESC LIMIT 1"
        )
        if not rows:
            return None
        started_at, finished_at, ok, archived, skipped, failed, size = rows[0]
        return RunRecord(
            started_at=started_at,
            finished_at=finished_at,
            ok=bool(ok),
            archived=archived,
            skipped=skipped,
            failed=json.loads(failed),
            bytes=size,
        )

    def note_skipped(self, stack_uid: str, backup_id: int, reason: str) -> bool:
        """Remember a skipped backup; True only the first time (so it is logged once)."""
        with self._db.transaction() as cursor:
            cursor.execute(
                "INSERT OR IGNORE INTO skipped (stack_uid, backup_id, reason) VALUES (?, ?, ?)",
                (stack_uid, backup_id, reason),
            )
            return cursor.rowcount == 1

    def record_stack_success(self, stack_uid: str, at: datetime) -> None:
        """Note that every due backup of `stack_uid` was archived at `at`."""
        with self._db.transaction() as cursor:
            cursor.execute(
                "INSERT OR REPLACE INTO stack_success (stack_uid, at) VALUES (?, ?)",
                (stack_uid, at.isoformat()),
            )

    def last_success_at(self, stack_uid: str | None = None) -> datetime | None:
        """When the last good pass finished (or, per stack, its last success)."""
        if stack_uid is None:
            rows = self._db.query(
                "SELECT finished_at FROM runs WHERE ok = 1 ORDER BY id DESC LIMIT 1"
            )
        else:
            rows = self._db.query(
                "SELECT at FROM stack_success WHERE stack_uid = ?", (stack_uid,)
            )
        return datetime.fromisoformat(rows[0][0]) if rows else None

    def stack_successes(self) -> dict[str, datetime]:
        """Every stack's last success (see `record_stack_success`), by stack uid."""
        rows = self._db.query("SELECT stack_uid, at FROM stack_success")
        return {str(uid): datetime.fromisoformat(at) for uid, at in rows}

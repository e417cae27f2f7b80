"""What `verify` found: each backup's latest check, and the runs as a whole."""

from __future__ import annotations

from dataclasses import astuple

from archiver.state.database import Database
from archiver.state.records import Verification, VerifyRun

KEPT_RUNS = 100


class Verifications:
    """The latest check of each archived copy, and the last verify runs."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def record(self, results: list[Verification], run: VerifyRun) -> None:
        """Each backup's latest check, and the run as a whole, in one transaction."""
        with self._db.transaction() as cursor:
            cursor.executemany(
                "INSERT OR REPLACE INTO verified (stack_uid, backup_id, storage, verified_at, ok,"
                " problem, deep) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (r.stack_uid, r.backup_id, r.storage, r.verified_at, int(r.ok), r.problem,
                     int(r.deep))
                    for r in results
                ],
            )
            cursor.execute(
                "INSERT INTO verify_runs (finished_at, checked, failed) VALUES (?, ?, ?)",
                astuple(run),
            )
            cursor.execute(
                "DELETE FROM verify_runs WHERE id <= (SELECT MAX(id) FROM verify_runs) - ?",
                (KEPT_RUNS,),
            )

    def latest(self) -> dict[tuple[str, int, str], Verification]:
        """The latest check of every archived copy that has been checked, by
        (stack uid, backup id, destination)."""
        rows = self._db.query(
            "SELECT stack_uid, backup_id, verified_at, ok, problem, deep, storage FROM verified"
        )
        return {
            (row[0], int(row[1]), row[6]): Verification(
                row[0], int(row[1]), row[2], bool(row[3]), row[4], bool(row[5]), row[6]
            )
            for row in rows
        }

    def last_run(self) -> VerifyRun | None:
        """The most recent `verify` run, or None before the first."""
        rows = self._db.query(
            "SELECT finished_at, checked, failed FROM verify_runs ORDER BY id DESC LIMIT 1"
        )
        return VerifyRun(*rows[0]) if rows else None

"""Each watched series' facts as the last pass judged them: what /metrics publishes.

Newest good backup, its late threshold and whether it is late, whether the newest
backup failed upstream, the newest archived size and the typical one. Rewritten
per stack when a pass that read the stack's list judged them different; kept as
they are otherwise (`judged_at` says when they last changed).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import astuple, dataclass
from typing import Any

from archiver.state.database import Database

_COLUMNS = (
    "stack_uid, db_type, database_name, newest_backup_id, newest_backup_date,"
    " late_after_seconds, late, upstream_failed, last_size, typical_size, judged_at"
)


@dataclass(frozen=True)
class SeriesFacts:
    """One series (stack, db_type, database_name), as judged at `judged_at`."""

    stack_uid: str
    db_type: str
    database_name: str
    newest_backup_id: int | None
    newest_backup_date: str | None
    late_after_seconds: float | None  # None: no threshold (too little history)
    late: bool
    upstream_failed: bool
    last_size: int | None  # the newest good backup's archived size, once archived
    typical_size: int | None  # the median archived size of the ones before it
    judged_at: str


class WatchSeries:
    """The judged facts of every watched series."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def update_stack(self, stack_uid: str, facts: Iterable[SeriesFacts]) -> None:
        """The stack's series are now exactly `facts` (no write when only `judged_at` differs)."""
        rows = [astuple(fact) for fact in facts]
        if [row[:-1] for row in rows] == [astuple(f)[:-1] for f in self.of_stack(stack_uid)]:
            return
        with self._db.transaction() as cursor:
            cursor.execute("DELETE FROM watch_series WHERE stack_uid = ?", (stack_uid,))
            cursor.executemany(
                f"INSERT INTO watch_series ({_COLUMNS})"  # noqa: S608 constant
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def of_stack(self, stack_uid: str) -> list[SeriesFacts]:
        """One stack's series, ordered by db type, database."""
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM watch_series WHERE stack_uid = ?"  # noqa: S608 constant
            " ORDER BY db_type, database_name",
            (stack_uid,),
        )
        return [_from_row(row) for row in rows]

    def all(self) -> list[SeriesFacts]:
        """Every series, ordered by stack, db type, database."""
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM watch_series"  # noqa: S608 constant
            " ORDER BY stack_uid, db_type, database_name"
        )
        return [_from_row(row) for row in rows]

    def forget_stacks_except(self, stack_uids: Iterable[str]) -> None:
        """Drop the series of every stack not in `stack_uids`."""
        keep = list(stack_uids)
        marks = ", ".join("?" for _ in keep)
        with self._db.transaction() as cursor:
            cursor.execute(
                f"DELETE FROM watch_series WHERE stack_uid NOT IN ({marks})",  # noqa: S608
                keep,
            )

    def forget_all(self) -> None:
        """Drop every series (the watch was turned off)."""
        with self._db.transaction() as cursor:
            cursor.execute("DELETE FROM watch_series")


def _from_row(row: tuple[Any, ...]) -> SeriesFacts:
    (stack_uid, db_type, name, newest_id, newest_date, late_after, late, failed, last, typical,
     judged_at) = row  # fmt: skip
    return SeriesFacts(
        str(stack_uid), str(db_type), str(name),
        None if newest_id is None else int(newest_id),
        None if newest_date is None else str(newest_date),
        None if late_after is None else float(late_after),
        bool(late), bool(failed),
        None if last is None else int(last),
        None if typical is None else int(typical),
        str(judged_at),
    )

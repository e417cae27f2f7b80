"""The stacks' names, as `GET /stacks` last gave them: shown beside each uid.

Read at most once a day (`read_at` says when), or for free when `[discover]`
lists the stacks anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from archiver.state.database import Database


class StackNames:
    """stack uid -> name (and environment), and when they were last read."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def record(self, stacks: Iterable[tuple[str, str | None, str | None]], at: datetime) -> None:
        """Every stack the token sees now, as (uid, name, environment), read at `at`."""
        with self._db.transaction() as cursor:
            cursor.execute("DELETE FROM stack_names")
            cursor.executemany(
                "INSERT OR REPLACE INTO stack_names (stack_uid, name, environment)"
                " VALUES (?, ?, ?)",
                list(stacks),
            )
            cursor.execute(
                "INSERT OR REPLACE INTO stack_names_read (id, at) VALUES (1, ?)", (at.isoformat(),)
            )

    def note_read(self, at: datetime) -> None:
        """A read was tried at `at` (even one that failed counts: at most one a day)."""
        with self._db.transaction() as cursor:
            cursor.execute(
                "INSERT OR REPLACE INTO stack_names_read (id, at) VALUES (1, ?)", (at.isoformat(),)
            )

    def read_at(self) -> datetime | None:
        """When the names were last read, or None before the first read."""
        rows = self._db.query("SELECT at FROM stack_names_read WHERE id = 1")
        return datetime.fromisoformat(rows[0][0]) if rows else None

    def names(self) -> dict[str, str]:
        """stack uid -> name, for the stacks that have one."""
        rows = self._db.query("SELECT stack_uid, name FROM stack_names WHERE name IS NOT NULL")
        return {str(uid): str(name) for uid, name in rows if name}

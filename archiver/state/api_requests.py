"""The API requests of the trailing hour, so that every process shares one hourly budget.

The daemon, a one-shot pass, `check-config` and the POSTs all add their
requests here (see `archiver.cloud66.budget`): run side by side, they still
stay under Cloud 66's 3,000 requests an hour together.
"""

from __future__ import annotations

from archiver.state.database import Database


class RequestLog:
    """Times (epoch seconds) of the API requests sent, by any process on this state."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def add(self, at: float) -> None:
        """Remember one API request."""
        with self._db.transaction() as cursor:
            cursor.execute("INSERT INTO api_requests (at) VALUES (?)", (at,))

    def since(self, since: float) -> list[float]:
        """Times of the requests made at or after `since`, oldest first."""
        rows = self._db.query("SELECT at FROM api_requests WHERE at >= ? ORDER BY at", (since,))
        return [float(row[0]) for row in rows]

    def forget_before(self, before: float) -> None:
        """Forget requests older than `before`."""
        with self._db.transaction() as cursor:
            cursor.execute("DELETE FROM api_requests WHERE at < ?", (before,))

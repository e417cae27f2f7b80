"""The watch's findings, and what each channel has still to be told of them.

A finding is identified by its kind and identity (a backup id, or a series and
its newest good backup id). It is stored when first noticed and queued once per
channel in the same transaction, so it is told once whatever crashes or restarts
come between; a queued message leaves the outbox only when its channel took it.
A finding that clears is deleted: if it comes back, it is new. Missed backups
stay, acknowledged or not, so their count only grows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from archiver.state.database import Database

MISSED = "missed"
LATE = "late"
UPSTREAM_FAILED = "upstream_failed"
SIZE_ANOMALY = "size_anomaly"
KINDS = (MISSED, LATE, UPSTREAM_FAILED, SIZE_ANOMALY)

_COLUMNS = "kind, identity, stack_uid, backup_id, details, noticed_at, acknowledged_at"


@dataclass(frozen=True)
class Finding:
    """One finding: `details` is its `status --json` entry (stack name aside)."""

    kind: str
    identity: str
    stack_uid: str
    backup_id: int | None
    details: dict[str, Any]
    noticed_at: str
    acknowledged_at: str | None = None


@dataclass(frozen=True)
class Queued:
    """A message about a finding that `channel` has not taken yet."""

    id: int
    channel: str
    kind: str
    identity: str
    event: dict[str, Any]


class Findings:
    """Findings that hold (and missed backups, acknowledged or not) and the outbox."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def reconcile(
        self,
        stack_uid: str,
        kinds: Collection[str],
        current: Sequence[Finding],
        outbox: Outbox,
    ) -> list[Finding]:
        """The stack's findings of `kinds` are now `current`; return the new ones.

        New ones are stored and queued (see `Outbox`) in one transaction; ones no
        longer current are deleted; ones that still hold keep when they were
        noticed and take their fresh details.
        """
        wanted = {(finding.kind, finding.identity): finding for finding in current}
        if self._unchanged(stack_uid, kinds, wanted):
            return []  # the common case: no write at all
        with self._db.transaction() as cursor:
            stored = _stack_findings(cursor, stack_uid, kinds)
            for key in stored.keys() - wanted.keys():
                cursor.execute("DELETE FROM watch_findings WHERE kind = ? AND identity = ?", key)
            for key in stored.keys() & wanted.keys():
                details = json.dumps(wanted[key].details)
                cursor.execute(
                    "UPDATE watch_findings SET details = ? WHERE kind = ? AND identity = ?",
                    (details, *key),
                )
            new = [wanted[key] for key in wanted.keys() - stored.keys()]
            _insert(cursor, new, outbox)
        return sorted(new, key=lambda finding: (finding.kind, finding.identity))

    def _unchanged(
        self, stack_uid: str, kinds: Collection[str], wanted: dict[tuple[str, str], Finding]
    ) -> bool:
        marks = ", ".join("?" for _ in kinds)
        query = "SELECT kind, identity, details FROM watch_findings WHERE stack_uid = ?"
        rows = self._db.query(f"{query} AND kind IN ({marks})", (stack_uid, *kinds))
        stored = {(kind, identity): json.loads(details) for kind, identity, details in rows}
        return stored == {key: finding.details for key, finding in wanted.items()}

    def add(self, findings: Iterable[Finding], outbox: Outbox) -> list[Finding]:
        """Store (and queue) those not stored yet; return them. For missed backups."""
        findings = list(findings)
        if not findings:
            return []
        with self._db.transaction() as cursor:
            new = [
                finding
                for finding in findings
                if not cursor.execute(
                    "SELECT 1 FROM watch_findings WHERE kind = ? AND identity = ?",
                    (finding.kind, finding.identity),
                ).fetchall()
            ]
            _insert(cursor, new, outbox)
        return new

    def current(self) -> list[Finding]:
        """Every finding that holds: missed ones only until acknowledged."""
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM watch_findings"  # noqa: S608 constant
            " WHERE acknowledged_at IS NULL ORDER BY noticed_at, kind, identity"
        )
        return [_from_row(row) for row in rows]

    def missed(self, backup_id: int, stack_uid: str | None = None) -> list[Finding]:
        """The missed findings of this backup id (of one stack, or of any)."""
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM watch_findings"  # noqa: S608 constant
            " WHERE kind = ? AND backup_id = ? AND (? IS NULL OR stack_uid = ?)"
            " ORDER BY stack_uid",
            (MISSED, backup_id, stack_uid, stack_uid),
        )
        return [_from_row(row) for row in rows]

    def acknowledge(self, finding: Finding, at: str) -> None:
        """A missed backup acknowledged: listed no more (still counted)."""
        with self._db.transaction() as cursor:
            cursor.execute(
                "UPDATE watch_findings SET acknowledged_at = ? WHERE kind = ? AND identity = ?"
                " AND acknowledged_at IS NULL",
                (at, finding.kind, finding.identity),
            )

    def missed_counts(self) -> dict[str, tuple[int, int]]:
        """Per stack: missed backups ever noticed, and those not acknowledged yet."""
        rows = self._db.query(
            "SELECT stack_uid, COUNT(*), SUM(acknowledged_at IS NULL) FROM watch_findings"
            " WHERE kind = ? GROUP BY stack_uid",
            (MISSED,),
        )
        return {str(uid): (int(total), int(open_ or 0)) for uid, total, open_ in rows}

    def clear(self, *, keep_stacks: Iterable[str] | None = None) -> None:
        """Drop the findings (missed ones aside) of every stack not in `keep_stacks`; all
        findings and the whole outbox when None (the watch was turned off)."""
        with self._db.transaction() as cursor:
            if keep_stacks is None:
                cursor.execute("DELETE FROM watch_findings")
                cursor.execute("DELETE FROM watch_outbox")
                return
            keep = list(keep_stacks)
            marks = ", ".join("?" for _ in keep)
            cursor.execute(
                f"DELETE FROM watch_findings WHERE kind != ? AND stack_uid NOT IN ({marks})",  # noqa: S608
                (MISSED, *keep),
            )


class Outbox:
    """Messages about new findings, one per channel, until that channel takes them.

    Built with the channels configured now and how to make a finding's message
    (`event_for`); read and emptied per channel by whoever tells.
    """

    def __init__(
        self,
        database: Database,
        channels: Sequence[str] = (),
        event_for: Callable[[Finding], dict[str, Any]] | None = None,
    ) -> None:
        self._db = database
        self.channels = tuple(channels)
        self._event_for = event_for

    def queue_in(self, cursor: sqlite3.Cursor, finding: Finding) -> None:
        """Queue `finding` for every channel, inside the caller's transaction."""
        if not self.channels or self._event_for is None:
            return
        event = json.dumps(self._event_for(finding))
        cursor.executemany(
            "INSERT INTO watch_outbox (channel, kind, identity, event, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [(c, finding.kind, finding.identity, event, finding.noticed_at) for c in self.channels],
        )

    def pending(self, channel: str) -> list[Queued]:
        """What `channel` has not taken yet, oldest first."""
        rows = self._db.query(
            "SELECT id, channel, kind, identity, event FROM watch_outbox WHERE channel = ?"
            " ORDER BY id",
            (channel,),
        )
        return [Queued(int(i), c, k, ident, json.loads(event)) for i, c, k, ident, event in rows]

    def taken(self, entries: Iterable[Queued]) -> None:
        """These messages reached their channel."""
        with self._db.transaction() as cursor:
            cursor.executemany("DELETE FROM watch_outbox WHERE id = ?", [(e.id,) for e in entries])

    def drop_channels_except(self, channels: Iterable[str]) -> None:
        """Forget messages queued for channels no longer configured."""
        keep = list(channels)
        marks = ", ".join("?" for _ in keep)
        with self._db.transaction() as cursor:
            cursor.execute(
                f"DELETE FROM watch_outbox WHERE channel NOT IN ({marks})",  # noqa: S608 marks
                keep,
            )


def _stack_findings(
    cursor: sqlite3.Cursor, stack_uid: str, kinds: Collection[str]
) -> dict[tuple[str, str], None]:
    marks = ", ".join("?" for _ in kinds)
    rows = cursor.execute(
        f"SELECT kind, identity FROM watch_findings WHERE stack_uid = ? AND kind IN ({marks})",  # noqa: S608
        (stack_uid, *kinds),
    ).fetchall()
    return {(str(kind), str(identity)): None for kind, identity in rows}


def _insert(cursor: sqlite3.Cursor, findings: Sequence[Finding], outbox: Outbox) -> None:
    for finding in findings:
        cursor.execute(
            f"INSERT OR REPLACE INTO watch_findings ({_COLUMNS})"  # noqa: S608 constant
            " VALUES (?, ?, ?, ?, ?, ?, NULL)",
            (
                finding.kind, finding.identity, finding.stack_uid, finding.backup_id,
                json.dumps(finding.details), finding.noticed_at,
            ),
        )
        outbox.queue_in(cursor, finding)


def _from_row(row: tuple[Any, ...]) -> Finding:
    kind, identity, stack_uid, backup_id, details, noticed_at, acknowledged_at = row
    return Finding(
        kind, identity, stack_uid, None if backup_id is None else int(backup_id),
        json.loads(details), noticed_at, acknowledged_at,
    )

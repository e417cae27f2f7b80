"""Judge one stack's list against what the state remembers, and record the verdict.

For a stack whose list a pass read:
1. the good backups listed are remembered (`state.seen`); rows of another list
   (group) or of a db_type no longer watched are forgotten, so they are never
   judged missed;
2. when the list was read whole, remembered backups it no longer holds are gone;
   those never archived (nor pruned) are missed findings;
3. each series is judged (late, newest failed upstream, size anomaly) from its good
   backups (those seen listed, and those archived: a longer history than Cloud 66
   keeps when keep_count is small), its facts
   stored for /metrics (`state.series`) and the stack's findings of those kinds
   reconciled (`state.findings`): new ones queued in the outbox, cleared ones gone;
4. gone rows a series' cadence no longer needs are forgotten.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from archiver.core.secrets import redact
from archiver.model.manifest import ArchivedBackup
from archiver.state.findings import LATE, MISSED, SIZE_ANOMALY, UPSTREAM_FAILED, Finding, Outbox
from archiver.state.seen import SeenBackup
from archiver.state.series_facts import SeriesFacts
from archiver.state.store import StateStore
from archiver.watch import rules
from archiver.watch.reading import Listed, StackReading, Thresholds, iso, parse_iso

# Judged afresh at every pass that read the stack; missed backups stay until acknowledged.
JUDGED_EACH_PASS = (LATE, UPSTREAM_FAILED, SIZE_ANOMALY)
# Upstream text kept of a failed backup's backup_result.
RESULT_LIMIT = 300
_OLDEST = datetime.min.replace(tzinfo=UTC)

SeriesKey = tuple[str, str]  # (db_type, database_name) within a stack


def judge_stack(
    state: StateStore,
    reading: StackReading,
    thresholds: Thresholds,
    *,
    archived: Sequence[ArchivedBackup],
    outbox: Outbox,
    now: datetime,
) -> list[Finding]:
    """Record what `reading` shows and return the findings it made new."""
    rows = _refresh_seen(state, reading)
    new: list[Finding] = []
    if reading.complete:
        new += _notice_missed(state, reading, rows, outbox, now)
    judged = _SeriesJudge(reading, thresholds, now)
    facts, current = judged.all(rows.values(), archived)
    new += state.findings.reconcile(reading.stack_uid, JUDGED_EACH_PASS, current, outbox)
    state.series.update_stack(reading.stack_uid, facts)
    state.seen.forget(reading.stack_uid, _beyond_history(rows.values()))
    return new


def _refresh_seen(state: StateStore, reading: StackReading) -> dict[int, SeenBackup]:
    """Remember the good backups listed; forget rows out of this list's scope."""
    uid = reading.stack_uid
    before = state.seen.of_stack(uid)
    out_of_scope = [
        row.backup_id
        for row in before
        if row.listing != reading.listing or not reading.watches(row.db_type)
    ]
    state.seen.forget(uid, out_of_scope)
    listed = [
        SeenBackup(
            uid, backup.backup_id, backup.db_type, backup.database_name,
            iso(backup.backup_date) if backup.backup_date else None, reading.listing,
        )
        for backup in reading.backups
        if backup.ok and reading.watches(backup.db_type)
    ]
    rows = {row.backup_id: row for row in before if row.backup_id not in set(out_of_scope)}
    # Only what changed is written: a steady pass costs the state no write at all.
    state.seen.remember(row for row in listed if rows.get(row.backup_id) != row)
    rows.update({row.backup_id: row for row in listed})
    return rows


def _notice_missed(
    state: StateStore,
    reading: StackReading,
    rows: dict[int, SeenBackup],
    outbox: Outbox,
    now: datetime,
) -> list[Finding]:
    """Backups no longer listed are gone; those never archived are missed."""
    uid = reading.stack_uid
    listed_ids = {backup.backup_id for backup in reading.backups}
    still_there = [row.backup_id for row in rows.values() if not row.gone]
    gone = rules.vanished(still_there, listed_ids)
    if not gone:
        return []
    missed = rules.missed(gone, state.archived.ids(uid), state.pruned.ids(uid))
    new = state.findings.add([_missed(rows[backup_id], now) for backup_id in missed], outbox)
    # After the findings: a crash in between finds them again, and `add` keeps one.
    state.seen.mark_gone(uid, gone)
    for backup_id in gone:
        rows[backup_id] = replace(rows[backup_id], gone=True)
    return new


def _missed(row: SeenBackup, now: datetime) -> Finding:
    noticed = _moment(now)
    details = {
        "stack_uid": row.stack_uid,
        "backup_id": row.backup_id,
        "db_type": row.db_type,
        "database_name": row.database_name,
        "backup_date": row.backup_date,
        "noticed_at": noticed,
    }
    identity = json.dumps([row.stack_uid, row.backup_id])
    return Finding(MISSED, identity, row.stack_uid, row.backup_id, details, noticed)


@dataclass(frozen=True)
class _History:
    """A series' good backups (newest first), its backups in this list, its archived ones."""

    good: list[tuple[datetime, int]]
    listed: list[Listed]
    archived: list[ArchivedBackup]


class _SeriesJudge:
    """Applies the rules to each series of one stack."""

    def __init__(self, reading: StackReading, thresholds: Thresholds, now: datetime) -> None:
        self._reading = reading
        self._thresholds = thresholds
        self._now = now
        self._judged_at = _moment(now)

    def all(
        self, rows: Iterable[SeenBackup], archived: Sequence[ArchivedBackup]
    ) -> tuple[list[SeriesFacts], list[Finding]]:
        """Every series' facts, and the findings that hold now."""
        facts: list[SeriesFacts] = []
        findings: list[Finding] = []
        for key, history in sorted(self._histories(rows, archived).items()):
            series_facts, series_findings = self._one(key, history)
            facts.append(series_facts)
            findings += series_findings
        return facts, findings

    def _histories(
        self, rows: Iterable[SeenBackup], archived: Sequence[ArchivedBackup]
    ) -> dict[SeriesKey, _History]:
        histories: dict[SeriesKey, _History] = defaultdict(lambda: _History([], [], []))
        for row in rows:
            date = parse_iso(row.backup_date)
            if date is not None:
                histories[(row.db_type, row.database_name)].good.append((date, row.backup_id))
        for backup in self._reading.backups:
            if self._reading.watches(backup.db_type):
                histories[backup.series].listed.append(backup)
        for record in archived:
            key = (record.db_type, record.database_name)
            if key in histories:
                histories[key].archived.append(record)
        for history in histories.values():
            # What was archived was good too: a history longer than Cloud 66 keeps.
            known = {backup_id for _, backup_id in history.good}
            history.good.extend([
                (date, record.backup_id)
                for record in history.archived
                if record.backup_id not in known and (date := parse_iso(record.backup_date))
            ])
            history.good.sort(reverse=True)
        return histories

    def _one(self, key: SeriesKey, history: _History) -> tuple[SeriesFacts, list[Finding]]:
        newest = history.good[0] if history.good else None
        dates = [date for date, _ in history.good]
        threshold = rules.late_after(dates, self._thresholds.max_backup_age)
        late = rules.is_late(newest[0] if newest else None, threshold, self._now)
        upstream = max(history.listed, key=_listed_order, default=None)
        failed = upstream is not None and not upstream.ok
        last_size, typical = _sizes(newest, history.archived)
        shrunk = last_size is not None and rules.is_shrunk(
            last_size, typical, self._thresholds.shrink_ratio
        )
        facts = SeriesFacts(
            self._reading.stack_uid, *key,
            newest_backup_id=newest[1] if newest else None,
            newest_backup_date=iso(newest[0]) if newest else None,
            late_after_seconds=threshold.total_seconds() if threshold else None,
            late=late, upstream_failed=failed, last_size=last_size, typical_size=typical,
            judged_at=self._judged_at,
        )
        findings = []
        if late and newest and threshold:
            findings.append(self._late(key, newest, round(threshold.total_seconds())))
        if failed and upstream is not None:
            findings.append(self._failed(upstream))
        if shrunk and newest and last_size is not None and typical is not None:
            findings.append(self._shrunk(key, newest[1], last_size, typical))
        return facts, findings

    def _finding(
        self, kind: str, identity: list[object], about: int, /, **details: object
    ) -> Finding:
        """A finding about backup `about` of this stack; `details` is its status entry."""
        uid = self._reading.stack_uid
        entry = {"stack_uid": uid, **details}
        return Finding(kind, json.dumps([uid, *identity]), uid, about, entry, self._judged_at)

    def _late(self, key: SeriesKey, newest: tuple[datetime, int], seconds: int) -> Finding:
        return self._finding(
            LATE, [*key, newest[1]], newest[1],
            db_type=key[0], database_name=key[1], newest_backup_id=newest[1],
            newest_backup_date=iso(newest[0]), late_after_seconds=seconds,
        )

    def _failed(self, backup: Listed) -> Finding:
        result = redact(backup.result or "")[:RESULT_LIMIT]
        return self._finding(
            UPSTREAM_FAILED, [backup.backup_id], backup.backup_id,
            backup_id=backup.backup_id, db_type=backup.db_type,
            database_name=backup.database_name,
            backup_date=iso(backup.backup_date) if backup.backup_date else None, result=result,
        )

    def _shrunk(self, key: SeriesKey, backup_id: int, size: int, typical: int) -> Finding:
        return self._finding(
            SIZE_ANOMALY, [backup_id], backup_id,
            backup_id=backup_id, db_type=key[0], database_name=key[1], size=size,
            typical_size=typical,
        )


def _listed_order(backup: Listed) -> tuple[datetime, int]:
    """Newest by date, then by id (ids grow)."""
    return (backup.backup_date or _OLDEST, backup.backup_id)


def _sizes(
    newest: tuple[datetime, int] | None, archived: Sequence[ArchivedBackup]
) -> tuple[int | None, int | None]:
    """The newest good backup's archived size and the typical size before it (or None)."""
    if newest is None:
        return None, None
    record = next((r for r in archived if r.backup_id == newest[1]), None)
    if record is None:
        return None, None
    earlier = sorted(
        ((date, r.backup_id, r.size) for r in archived if (date := parse_iso(r.backup_date))),
        reverse=True,
    )
    previous = [size for date, backup_id, size in earlier if (date, backup_id) < newest]
    return record.size, rules.typical_size(previous)


def _beyond_history(rows: Iterable[SeenBackup]) -> list[int]:
    """Gone rows older than the newest `CADENCE_BACKUPS` of their series."""
    by_series: dict[tuple[str, str, str], list[tuple[datetime, int, bool]]] = defaultdict(list)
    for row in rows:
        date = parse_iso(row.backup_date) or _OLDEST
        by_series[row.series].append((date, row.backup_id, row.gone))
    forget = []
    for entries in by_series.values():
        entries.sort(reverse=True)
        forget += [backup_id for _, backup_id, gone in entries[rules.CADENCE_BACKUPS :] if gone]
    return forget


def _moment(now: datetime) -> str:
    return iso(now.replace(microsecond=0))

"""The judge on a real state with a fake "now": what time alone changes, and what it keeps."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from archiver.simulator import cadence
from archiver.state.findings import LATE, UPSTREAM_FAILED, Finding, Outbox
from archiver.state.store import StateStore
from archiver.watch.judge import judge_stack
from archiver.watch.reading import Listed, StackReading, Thresholds

FRIDAY_NIGHT = datetime(2026, 11, 27, 2, tzinfo=UTC)
DEFAULTS = Thresholds(max_backup_age=None, shrink_ratio=0.5)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateStore]:
    """A fresh state database."""
    store = StateStore.open(tmp_path / "state")
    yield store
    store.close()


def _reading(
    backups: Sequence[Listed], *, listing: str = "", complete: bool = True
) -> StackReading:
    return StackReading("stack-a", listing, None, tuple(backups), complete)


def _good(dates: Sequence[datetime], first_id: int = 1) -> list[Listed]:
    """Good backups, newest first as the API lists them, ids growing with the date."""
    ordered = sorted(dates)
    backups = [Listed(first_id + n, "mysql", "shop", date, True) for n, date in enumerate(ordered)]
    return backups[::-1]


def _judge(state: StateStore, reading: StackReading, now: datetime) -> list[Finding]:
    outbox = Outbox(state.database)
    return judge_stack(state, reading, DEFAULTS, archived=[], outbox=outbox, now=now)


def test_a_weekday_only_series_is_quiet_all_weekend_and_late_on_monday_after_three_days(
    state: StateStore,
) -> None:
    """Friday's backup judged on Sunday evening: not late; Monday past 02:00 with none: late."""
    reading = _reading(_good(cadence(FRIDAY_NIGHT, 20, timedelta(days=1), weekdays_only=True)))
    saturday, sunday_evening = FRIDAY_NIGHT + timedelta(days=1), FRIDAY_NIGHT + timedelta(days=2.9)
    assert _judge(state, reading, saturday) == []
    assert _judge(state, reading, sunday_evening) == []

    (late,) = _judge(state, reading, FRIDAY_NIGHT + timedelta(days=3, hours=1))

    assert late.kind == LATE
    assert late.details["late_after_seconds"] == 3 * 86400
    assert late.details["newest_backup_date"] == "2026-11-27T02:00:00Z"


def test_a_finding_that_holds_is_not_new_again_and_keeps_when_it_was_noticed(
    state: StateStore,
) -> None:
    """Judged late twice: one new finding, noticed at the first judgement."""
    reading = _reading(_good(cadence(FRIDAY_NIGHT, 5, timedelta(days=1))))
    first = FRIDAY_NIGHT + timedelta(days=3)
    assert [f.kind for f in _judge(state, reading, first)] == [LATE]
    assert _judge(state, reading, first + timedelta(hours=5)) == []
    (held,) = state.findings.current()
    assert held.noticed_at == "2026-11-30T02:00:00Z"


def test_a_failure_that_clears_and_comes_back_is_new(state: StateStore) -> None:
    """Newest failed, then a good one after it, then that one gone: told as new twice."""
    good = _good([FRIDAY_NIGHT - timedelta(days=2)])
    failed = Listed(9, "mysql", "shop", FRIDAY_NIGHT - timedelta(days=1), False, "dump error")
    later = Listed(10, "mysql", "shop", FRIDAY_NIGHT, True)
    assert [f.kind for f in _judge(state, _reading([failed, *good]), FRIDAY_NIGHT)] == [
        UPSTREAM_FAILED
    ]
    assert _judge(state, _reading([later, failed, *good]), FRIDAY_NIGHT) == []
    assert state.findings.current() == []

    again = _judge(state, _reading([failed, *good]), FRIDAY_NIGHT)

    # Backup 10 was seen, never archived, and is gone: missed too.
    assert sorted((f.kind, f.backup_id) for f in again) == [("missed", 10), (UPSTREAM_FAILED, 9)]


def test_what_is_remembered_stays_small_however_long_the_history(state: StateStore) -> None:
    """A series' gone backups are kept only as far as its cadence needs (31 a series)."""
    history = _good(cadence(FRIDAY_NIGHT, 200, timedelta(hours=1)))
    now = FRIDAY_NIGHT + timedelta(minutes=30)
    _judge(state, _reading(history), now)
    assert len(state.seen.of_stack("stack-a")) == 200

    _judge(state, _reading(history[:5]), now)  # Cloud 66 now lists only the newest five

    assert len(state.seen.of_stack("stack-a")) == 31
    assert state.findings.current()[0].kind == "missed"  # none was archived here


def test_backups_seen_in_another_group_list_are_not_missed_when_the_group_changes(
    state: StateStore,
) -> None:
    """Seen while listing group 15; the config now lists group 16: nothing is missed."""
    dates = cadence(FRIDAY_NIGHT, 3, timedelta(days=1))
    _judge(state, _reading(_good(dates), listing="15"), FRIDAY_NIGHT)

    found = _judge(state, _reading(_good(dates, first_id=100), listing="16"), FRIDAY_NIGHT)

    assert found == []
    assert {row.listing for row in state.seen.of_stack("stack-a")} == {"16"}

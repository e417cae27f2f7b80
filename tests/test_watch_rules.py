"""The watch's rules as the contract fixes them, on dates and sizes alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from archiver.simulator import cadence
from archiver.watch import rules

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
FRIDAY_NIGHT = datetime(2026, 11, 27, 2, tzinfo=UTC)  # a Friday, 02:00 UTC


def _every(interval: timedelta, count: int, end: datetime = FRIDAY_NIGHT) -> list[datetime]:
    return cadence(end, count, interval)


def test_a_nightly_series_is_late_after_two_days() -> None:
    """Twice the median of daily intervals: a nightly series is late past 48 hours."""
    dates = _every(DAY, 12)
    threshold = rules.late_after(dates, None)
    assert threshold == 2 * DAY
    assert not rules.is_late(dates[0], threshold, dates[0] + 2 * DAY)
    assert rules.is_late(dates[0], threshold, dates[0] + 2 * DAY + timedelta(seconds=1))


def test_a_weekday_only_series_is_not_late_over_the_weekend() -> None:
    """Mon-Fri backups: the three-day weekend gap is the threshold, so Sunday is not late."""
    dates = cadence(FRIDAY_NIGHT, 20, DAY, weekdays_only=True)
    assert [d.weekday() for d in dates[:6]] == [4, 3, 2, 1, 0, 4]
    threshold = rules.late_after(dates, None)
    assert threshold == 3 * DAY
    sunday_evening = FRIDAY_NIGHT + timedelta(days=2, hours=20)
    assert not rules.is_late(dates[0], threshold, sunday_evening)
    assert rules.is_late(dates[0], threshold, FRIDAY_NIGHT + 3 * DAY + HOUR)


def test_the_longest_interval_counts_only_among_the_last_thirty() -> None:
    """A week-long gap 31 intervals back no longer widens the threshold; 30 back it does."""
    recent = _every(DAY, 31)  # 30 daily intervals
    old_gap = [recent[-1] - 7 * DAY]
    assert rules.late_after(recent + old_gap, None) == 2 * DAY
    within = [*_every(DAY, 30), _every(DAY, 30)[-1] - 7 * DAY]
    assert rules.late_after(within, None) == 7 * DAY


def test_the_median_is_of_the_last_ten_intervals() -> None:
    """Ten recent hourly intervals after years of daily ones: twice the median is 2 hours,
    but the longest of the last thirty (a day) wins."""
    hourly = _every(HOUR, 11)
    daily = _every(DAY, 20, end=hourly[-1] - DAY)
    threshold = rules.late_after(hourly + daily, None)
    assert threshold == DAY
    assert rules.late_after(_every(HOUR, 11), None) == 2 * HOUR


def test_a_fast_series_is_never_late_in_under_an_hour() -> None:
    """Backups every 10 minutes: the one-hour floor applies."""
    assert rules.late_after(_every(timedelta(minutes=10), 20), None) == HOUR


def test_fewer_than_three_good_backups_are_late_only_by_max_backup_age() -> None:
    """Two backups: no inferred threshold; with max_backup_age, that is the threshold."""
    two = _every(DAY, 2)
    assert rules.late_after(two, None) is None
    assert not rules.is_late(two[0], None, two[0] + 365 * DAY)
    assert rules.late_after(two, 8 * DAY) == 8 * DAY
    assert rules.late_after([], 8 * DAY) == 8 * DAY
    assert not rules.is_late(None, 8 * DAY, FRIDAY_NIGHT)


def test_max_backup_age_replaces_the_inference() -> None:
    """max_backup_age wins even where the history would allow more (or less)."""
    dates = _every(DAY, 12)
    assert rules.late_after(dates, 26 * HOUR) == 26 * HOUR
    assert rules.late_after(dates, 10 * DAY) == 10 * DAY


def test_typical_size_needs_three_and_takes_the_median_of_the_last_ten() -> None:
    """Under three earlier sizes there is no typical size; older than ten do not count."""
    assert rules.typical_size([100, 100]) is None
    assert rules.typical_size([100, 300, 200]) == 200
    assert rules.typical_size([1000] * 10 + [1] * 50) == 1000
    assert rules.typical_size([10, 20, 30, 40]) == 25


@pytest.mark.parametrize(
    ("size", "typical", "ratio", "shrunk"),
    [
        (49_999, 100_000, 0.5, True),
        (50_000, 100_000, 0.5, False),  # "smaller than": the boundary is fine
        (30_000, 100_000, 0.25, False),
        (30_000, None, 0.5, False),  # no history: no judgement
    ],
)
def test_shrunk_means_smaller_than_ratio_times_typical(
    size: int, typical: int | None, ratio: float, shrunk: bool
) -> None:
    """The size anomaly rule, at and around its boundary."""
    assert rules.is_shrunk(size, typical, ratio) is shrunk


def test_missed_is_vanished_and_never_archived_nor_pruned() -> None:
    """Of the backups seen, those no longer listed and neither archived nor pruned."""
    gone = rules.vanished([1, 2, 3, 4, 5], listed_ids={4, 5})
    assert gone == [1, 2, 3]
    assert rules.missed(gone, archived_ids={1}, pruned_ids={2}) == [3]

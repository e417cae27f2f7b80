"""The watch's rules as pure functions of dates, sizes and ids (contract: "The watch").

- late: the newest good backup is older than `max_backup_age` where set, else than
  the largest of twice the median of the last ten intervals, the longest of the
  last thirty and one hour; with fewer than three good backups, only
  `max_backup_age` makes a series late.
- size anomaly: the newest good backup, archived, is smaller than `shrink_ratio`
  times the median archived size of the (at least three) good backups before it.
- missed: seen listed, never archived nor pruned, and no longer listed.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timedelta

# 30 intervals need 31 backups: what a series keeps of its history.
CADENCE_BACKUPS = 31
MEDIAN_INTERVALS = 10
LONGEST_INTERVALS = 30
MIN_GOOD_BACKUPS = 3
LATE_FLOOR = timedelta(hours=1)
# The typical size is the median of the last ten archived before the newest: a
# recent window, so a database that grew for years is judged by its size now.
TYPICAL_SIZE_BACKUPS = 10
MIN_SIZE_HISTORY = 3


def intervals(dates_newest_first: Sequence[datetime]) -> list[timedelta]:
    """The gaps between consecutive backups, newest gap first."""
    return [newer - older for newer, older in itertools.pairwise(dates_newest_first)]


def late_after(
    dates_newest_first: Sequence[datetime], max_backup_age: timedelta | None
) -> timedelta | None:
    """How old the newest good backup may get before the series is late; None: never."""
    if max_backup_age is not None:
        return max_backup_age
    if len(dates_newest_first) < MIN_GOOD_BACKUPS:
        return None
    gaps = intervals(dates_newest_first[: LONGEST_INTERVALS + 1])
    median = timedelta(
        seconds=statistics.median(gap.total_seconds() for gap in gaps[:MEDIAN_INTERVALS])
    )
    return max(2 * median, max(gaps), LATE_FLOOR)


def is_late(newest: datetime | None, threshold: timedelta | None, now: datetime) -> bool:
    """True when the newest good backup is older than the threshold."""
    return newest is not None and threshold is not None and now - newest > threshold


def typical_size(previous_sizes_newest_first: Sequence[int]) -> int | None:
    """The median of the last ten sizes before the newest; None below three."""
    recent = previous_sizes_newest_first[:TYPICAL_SIZE_BACKUPS]
    if len(recent) < MIN_SIZE_HISTORY:
        return None
    return round(statistics.median(recent))


def is_shrunk(size: int, typical: int | None, shrink_ratio: float) -> bool:
    """True when `size` is below `shrink_ratio` times the typical size."""
    return typical is not None and size < shrink_ratio * typical


def vanished(seen_ids: Iterable[int], listed_ids: Collection[int]) -> list[int]:
    """Backups seen before that a complete list no longer holds."""
    return sorted(backup_id for backup_id in seen_ids if backup_id not in listed_ids)


def missed(
    vanished_ids: Iterable[int], archived_ids: Collection[int], pruned_ids: Collection[int]
) -> list[int]:
    """Of the vanished backups, those never archived (nor pruned, which were archived)."""
    return [
        backup_id
        for backup_id in vanished_ids
        if backup_id not in archived_ids and backup_id not in pruned_ids
    ]

"""Which backups of one series a retention policy keeps: restic `forget` semantics.

Pure: no clock, no storage, no I/O. The caller groups backups into series
(stack, db_type, database), calls `decide` once per series, and removes what
it is told to remove.

The rules follow restic's `ApplyPolicy` (internal/restic/snapshot_policy.go),
checked against the restic binary (Debian's, 0.14) by tests/test_retention.py:

- Backups are walked newest first. Equal moments keep their input order (the
  earlier item counts as newer), so a caller that wants a tie-break, e.g. the
  larger backup id first, sorts the input that way.
- `keep_last`, `keep_hourly`, `keep_daily`, `keep_weekly` (ISO weeks),
  `keep_monthly` and `keep_yearly` each remember the last bucket they kept and
  keep a backup whose bucket differs, until their count is used up: the newest
  backup of each of their last n buckets that hold a backup. `keep_last`
  puts every backup in a bucket of its own. Buckets are taken in UTC.
- Nothing else is kept. restic 0.16 added one more rule (a count not used up
  also keeps the series' oldest backup); it is left out on purpose: the
  contract defines the rules as above, and a count that is not used up keeps
  exactly the buckets there are.
- `keep_within` keeps every backup strictly newer than the series' newest
  backup minus the duration. Unlike restic, the newest is not checked against
  the clock (restic ignores snapshots dated in the future for this anchor).
- A backup kept by any rule stays; a backup no rule keeps is removed.
- A backup without a date is never removed: it is kept with the reason
  "undated", takes no part in the rules (it uses up no count and is not the
  newest for `keep_within`), and comes after the dated ones in the result.
- A naive datetime is taken as UTC, as elsewhere in the archiver.

Reasons are short strings, calendar rules from hourly to yearly first, then
`last`, then `within`: "daily 2026-11-29", "weekly 2026-W48", "last 1" (1 is
the newest), "within 2d", "undated".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

T = TypeVar("T")

UNDATED = "undated"

# restic puts a rule's bucket in an integer; a string label says the same and reads
# in a reason. The int is the backup's position among the dated ones, newest first.
BucketOf = Callable[[datetime, int], str]


def _position(_moment: datetime, index: int) -> str:
    return str(index + 1)


def _hour(moment: datetime, _index: int) -> str:
    return f"{_day(moment, _index)}T{moment.hour:02d}"


def _day(moment: datetime, _index: int) -> str:
    return f"{_month(moment, _index)}-{moment.day:02d}"


def _iso_week(moment: datetime, _index: int) -> str:
    year, week, _weekday = moment.isocalendar()
    return f"{year:04d}-W{week:02d}"


def _month(moment: datetime, _index: int) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


def _year(moment: datetime, _index: int) -> str:
    return f"{moment.year:04d}"


# (rule name, bucket) in the order their reasons are listed.
_COUNT_RULES: tuple[tuple[str, BucketOf], ...] = (
    ("hourly", _hour),
    ("daily", _day),
    ("weekly", _iso_week),
    ("monthly", _month),
    ("yearly", _year),
    ("last", _position),
)
# The order describe() lists them in: the way restic and the config list them.
_DESCRIBE_ORDER = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def format_duration(duration: timedelta) -> str:
    """A duration the way the config writes it: "2d", "1d12h", "90s"."""
    seconds = int(duration.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts) or "0s"


@dataclass(frozen=True)
class RetentionPolicy:
    """The keep_* rules for one series; 0 (or None for keep_within) turns a rule off."""

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: timedelta | None = None

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, int) and value < 0:
                raise ValueError(f"{field.name} cannot be negative")
        if self.keep_within is not None and self.keep_within <= timedelta(0):
            raise ValueError("keep_within must be positive (None turns it off)")

    def count(self, rule: str) -> int:
        """How many buckets the rule `rule` ("last", "daily", ...) keeps."""
        value = getattr(self, f"keep_{rule}")
        assert isinstance(value, int)
        return value

    def is_empty(self) -> bool:
        """True when no rule is on: such a policy would remove every backup."""
        counts = (self.count(rule) for rule in _DESCRIBE_ORDER)
        return not any(counts) and self.keep_within is None

    def describe(self) -> str:
        """The rules that are on, for logs: "last 7, daily 14, within 2d"."""
        parts = [f"{rule} {self.count(rule)}" for rule in _DESCRIBE_ORDER if self.count(rule)]
        if self.keep_within is not None:
            parts.append(f"within {format_duration(self.keep_within)}")
        return ", ".join(parts) or "no rule"


@dataclass(frozen=True)
class Decision(Generic[T]):
    """One backup's fate: kept for `reasons`, or removed when there are none."""

    item: T
    moment: datetime | None  # in UTC; None for an undated backup
    reasons: tuple[str, ...]

    @property
    def keep(self) -> bool:
        """True when some rule keeps the backup."""
        return bool(self.reasons)


def decide(
    items: Sequence[T],
    moment_of: Callable[[T], datetime | None],
    policy: RetentionPolicy,
) -> list[Decision[T]]:
    """Apply `policy` to one series. Newest first in the result, undated ones last.

    Raises ValueError for an empty policy: it would remove everything, and the
    config refuses it, so getting one here is a bug in the caller.
    """
    if policy.is_empty():
        raise ValueError("an empty retention policy would remove every backup")
    dated: list[tuple[T, datetime]] = []
    undated: list[T] = []
    for item in items:
        moment = moment_of(item)
        if moment is None:
            undated.append(item)
        else:
            dated.append((item, _in_utc(moment)))
    # sorted() is stable with reverse=True too: equal moments keep their input order.
    dated.sort(key=lambda pair: pair[1], reverse=True)
    moments = [moment for _item, moment in dated]
    reasons = _reasons(moments, policy)
    decisions = [
        Decision(item, moment, tuple(why))
        for (item, moment), why in zip(dated, reasons, strict=True)
    ]
    return decisions + [Decision(item, None, (UNDATED,)) for item in undated]


def _in_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _reasons(moments: list[datetime], policy: RetentionPolicy) -> list[list[str]]:
    """Each moment's reasons (newest first); the rules are independent of each other."""
    reasons: list[list[str]] = [[] for _moment in moments]
    for rule, bucket_of in _COUNT_RULES:
        count = policy.count(rule)
        if count:
            _apply_count_rule(rule, count, bucket_of, moments, reasons)
    if policy.keep_within is not None and moments:
        _apply_within(policy.keep_within, moments, reasons)
    return reasons


def _apply_count_rule(
    rule: str,
    count: int,
    bucket_of: BucketOf,
    moments: list[datetime],
    reasons: list[list[str]],
) -> None:
    """Keep the newest backup of each of the rule's last `count` buckets, as restic does."""
    previous: str | None = None
    for index, moment in enumerate(moments):
        if count == 0:
            return
        bucket = bucket_of(moment, index)
        if bucket != previous:
            reasons[index].append(f"{rule} {bucket}")
            previous = bucket
            count -= 1


def _apply_within(within: timedelta, moments: list[datetime], reasons: list[list[str]]) -> None:
    """Keep every backup strictly newer than the newest minus `within`."""
    cutoff = moments[0] - within
    reason = f"within {format_duration(within)}"
    for index, moment in enumerate(moments):
        if moment <= cutoff:
            return  # newest first: everything after this is older still
        reasons[index].append(reason)

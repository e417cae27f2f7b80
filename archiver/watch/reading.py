"""What a pass read of one stack, in the watch's terms: no Cloud 66 types beyond this point."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class Listed:
    """One backup in a stack's list (good or not)."""

    backup_id: int
    db_type: str
    database_name: str
    backup_date: datetime | None
    ok: bool
    result: str | None = None  # upstream's backup_result, for a failed one

    @property
    def series(self) -> tuple[str, str]:
        """(db_type, database_name) within the stack."""
        return (self.db_type, self.database_name)


@dataclass(frozen=True)
class StackReading:
    """A stack's list as a pass read it.

    `listing` names the list (its group filter; "" for every group): backups seen
    in another list are not judged against this one. `db_types` are the types
    watched (None: all). `complete`: every page read, none failed, skipped or
    cut short; only then can a backup's absence mean it is gone.
    """

    stack_uid: str
    listing: str
    db_types: tuple[str, ...] | None
    backups: tuple[Listed, ...]
    complete: bool

    def watches(self, db_type: str) -> bool:
        """True when backups of this db_type are watched."""
        return self.db_types is None or db_type in self.db_types


@dataclass(frozen=True)
class Thresholds:
    """A stack's thresholds: `[watch]` with the stack's override."""

    max_backup_age: timedelta | None
    shrink_ratio: float


def iso(moment: datetime) -> str:
    """A backup date as manifests write it: ISO 8601 UTC with a Z."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return utc.isoformat().replace("+00:00", "Z")


def parse_iso(text: str | None) -> datetime | None:
    """An ISO 8601 date (naive ones are UTC); None for none or garbage."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

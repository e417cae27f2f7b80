"""Backup dates as Cloud 66's backup tasks make them: regular, or irregular (weekdays only).

    dates = cadence(end=last_night, count=10, every=timedelta(days=1), weekdays_only=True)

gives the ten weekday backups up to `end`, newest first, skipping Saturdays and
Sundays: the schedule a watch must not call late every Monday morning.
"""

from __future__ import annotations

from datetime import datetime, timedelta

SATURDAY = 5


def cadence(
    end: datetime, count: int, every: timedelta, *, weekdays_only: bool = False
) -> list[datetime]:
    """`count` backup moments, newest (`end`) first, `every` apart; weekends skipped if asked."""
    if count < 0 or every <= timedelta(0):
        raise ValueError("count must be >= 0 and every positive")
    moments: list[datetime] = []
    moment = end
    while len(moments) < count:
        if not (weekdays_only and moment.weekday() >= SATURDAY):
            moments.append(moment)
        moment -= every
    return moments

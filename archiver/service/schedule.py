"""When passes run, and how old the last good pass may be: the schedule's arithmetic.

The daemon builds its APScheduler trigger here; `health`, /readyz and `status`
derive `max_age` here. None of them needs the daemon or the HTTP server loaded
for that.
"""

from __future__ import annotations

import functools
import itertools
import re
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from archiver.config.settings import ScheduleSettings, Settings

# How far ahead cron fire times are looked at, and at most how many.
_CRON_HORIZON = timedelta(days=8)
_CRON_MAX_FIRES = 2000
# ...but at least this many: a year of a monthly schedule.
_CRON_MIN_FIRES = 13
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def build_trigger(schedule: ScheduleSettings) -> BaseTrigger:
    """An interval or cron trigger, with jitter, in the configured time zone."""
    jitter = int(schedule.jitter.total_seconds()) or None
    if schedule.cron is not None:
        minute, hour, day, month, day_of_week = schedule.cron.split()
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=crontab_weekdays(day_of_week),
            jitter=jitter,
            timezone=schedule.timezone,
        )
    interval = schedule.effective_interval
    assert interval is not None  # effective_interval is never None without cron
    return IntervalTrigger(
        seconds=interval.total_seconds(), jitter=jitter, timezone=schedule.timezone
    )


def crontab_weekdays(field: str) -> str:
    """Crontab's day-of-week field in APScheduler 3's terms.

    Crontab counts 0 (and 7) as Sunday; APScheduler 3 counts 0 as Monday. Names
    mean the same to both, so numeric items become explicit lists of names.
    """
    items = []
    for item in field.split(","):
        base, _, step = item.partition("/")
        numeric = re.fullmatch(r"(\d+)(?:-(\d+))?", base)
        if base == "*" and step:
            days = list(range(7))
        elif numeric:
            first = int(numeric.group(1))
            days = list(range(first, int(numeric.group(2) or first) + 1))
        else:
            items.append(item)  # names and "*" already mean the same to both
            continue
        chosen = days[:: int(step)] if step else days
        items.append(",".join(dict.fromkeys(_WEEKDAYS[day % 8] for day in chosen)))
    return ",".join(items)


def describe_schedule(schedule: ScheduleSettings) -> str:
    """`every 1:00:00 plus up to 0:02:00 jitter` or `cron '15 * * * *' (UTC)`, for logs."""
    if schedule.cron is not None:
        return f"cron {schedule.cron!r} ({schedule.timezone})"
    interval = schedule.effective_interval
    jitter = f" plus up to {schedule.jitter} jitter" if schedule.jitter else ""
    return f"every {interval}{jitter}"


def max_age_for(settings: Settings) -> timedelta:
    """`[http] max_age`, else twice the schedule's period plus its jitter."""
    if settings.http is not None and settings.http.max_age is not None:
        return settings.http.max_age
    return 2 * schedule_period(settings.schedule) + settings.schedule.jitter


def schedule_period(schedule: ScheduleSettings) -> timedelta:
    """The interval, or a cron schedule's longest gap between fire times in the coming week."""
    if schedule.cron is None:
        interval = schedule.effective_interval
        assert interval is not None  # never None without cron
        return interval
    return longest_cron_gap(schedule.cron, schedule.timezone)


@functools.lru_cache(maxsize=8)
def longest_cron_gap(cron: str, timezone: str) -> timedelta:
    """The longest wait between two fire times of `cron` over the coming week and a day.

    A week and a day from the first fire: every gap of a weekly pattern shows up,
    so a weekdays-only schedule is not called stale every Monday morning. A sparser
    schedule (@monthly, @yearly) is followed for `_CRON_MIN_FIRES` fires instead, so
    every month length shows up too.
    """
    trigger = build_trigger(ScheduleSettings(cron=cron, timezone=timezone))
    fires: list[datetime] = []
    previous = trigger.get_next_fire_time(None, datetime.now(UTC))
    horizon = (previous or datetime.now(UTC)) + _CRON_HORIZON
    while (
        previous is not None
        and (previous <= horizon or len(fires) < _CRON_MIN_FIRES)
        and len(fires) < _CRON_MAX_FIRES
    ):
        fires.append(previous)
        previous = trigger.get_next_fire_time(previous, previous + timedelta(seconds=1))
    gaps = [later - earlier for earlier, later in itertools.pairwise(fires)]
    return max(gaps, default=_CRON_HORIZON)

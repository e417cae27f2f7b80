"""The daemon: a pass at start, then one per schedule tick, until SIGTERM or SIGINT.

APScheduler only *announces* that a pass is due; one runner loop runs passes.
So passes never overlap, and ticks that fall while a pass runs collapse into
one pass right after it (a missed pass runs once, not many times).
"""

from __future__ import annotations

import asyncio
import re
import signal
from datetime import UTC, datetime

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from archiver import systemd
from archiver.config import ScheduleSettings, Settings
from archiver.http import serve_http
from archiver.runtime import Runtime
from archiver.sync import SyncPass

log = structlog.get_logger(__name__)


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


_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


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


class Daemon:
    """Runs passes on a schedule and shuts down gracefully."""

    def __init__(self, settings: Settings, token: str) -> None:
        self._settings = settings
        self._token = token
        self._stopping = asyncio.Event()
        self._pass_due = asyncio.Event()

    async def run(self) -> int:
        """Run until a signal; always returns exit code 0 after a clean shutdown."""
        self._install_signal_handlers()
        # The HTTP endpoints start before the first pass and stop before the runtime closes.
        async with (
            Runtime(self._settings, self._token) as runtime,
            serve_http(self._settings, runtime),
        ):
            runtime.observers.append(systemd.StatusObserver())
            scheduler = self._start_scheduler()
            watchdog = systemd.start_watchdog()
            # READY=1 last, once everything that serves is up (scheduler, HTTP listener).
            systemd.ready()
            try:
                await self._run_passes(runtime)
            finally:
                if watchdog is not None:
                    watchdog.cancel()
                scheduler.shutdown(wait=False)
        log.info("daemon stopped")
        return 0

    def stop(self) -> None:
        """Stop taking new work; the pass in flight gets the grace period."""
        if not self._stopping.is_set():
            systemd.stopping()
            log.info(
                "stopping: no new work; transfers in flight may finish",
                grace_seconds=self._settings.transfer.grace_period.total_seconds(),
            )
        self._stopping.set()
        self._pass_due.set()

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)

    def _start_scheduler(self) -> AsyncIOScheduler:
        scheduler = AsyncIOScheduler(timezone=self._settings.schedule.timezone)
        scheduler.add_job(
            self._announce_pass,
            build_trigger(self._settings.schedule),
            id="sync-pass",
            next_run_time=datetime.now(UTC),
            coalesce=True,
            max_instances=1,
            misfire_grace_time=int(self._settings.schedule.misfire_grace_time.total_seconds()),
        )
        scheduler.start()
        log.info("daemon started", schedule=_describe(self._settings.schedule))
        return scheduler

    def _announce_pass(self) -> None:
        self._pass_due.set()

    async def _run_passes(self, runtime: Runtime) -> None:
        while True:
            await self._pass_due.wait()
            if self._stopping.is_set():
                return
            self._pass_due.clear()
            await self._run_one_pass(runtime)

    async def _run_one_pass(self, runtime: Runtime) -> None:
        sync_pass = SyncPass(runtime, stopping=self._stopping)
        task = asyncio.create_task(sync_pass.run())
        stop_waiter = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({task, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
        stop_waiter.cancel()
        if not task.done():
            await self._drain(task)
        elif task.exception() is not None:
            log.error("pass crashed", error=repr(task.exception()))

    async def _drain(self, task: asyncio.Task[object]) -> None:
        """Give the transfers in flight the grace period, then abandon them cleanly."""
        grace = self._settings.transfer.grace_period.total_seconds()
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            log.warning("grace period over; abandoning transfers in flight (resumed next pass)")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _describe(schedule: ScheduleSettings) -> str:
    if schedule.cron is not None:
        return f"cron {schedule.cron!r} ({schedule.timezone})"
    interval = schedule.effective_interval
    jitter = f" plus up to {schedule.jitter} jitter" if schedule.jitter else ""
    return f"every {interval}{jitter}"

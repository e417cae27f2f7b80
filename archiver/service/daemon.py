"""The daemon: a pass at start, then one per schedule tick, until SIGTERM or SIGINT.

APScheduler only *announces* that a pass is due; one runner loop runs passes.
So passes never overlap, and ticks that fall while a pass runs collapse into
one pass right after it (a missed pass runs once, not many times).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from archiver.config.settings import Settings
from archiver.service import systemd
from archiver.service.http import serve_http
from archiver.service.schedule import build_trigger, describe_schedule
from archiver.sync.graceful_stop import GracefulStop
from archiver.sync.runtime import Runtime
from archiver.sync.sync_pass import SyncPass

log = structlog.get_logger(__name__)


class Daemon:
    """Runs passes on a schedule and shuts down gracefully."""

    def __init__(self, settings: Settings, token: str) -> None:
        self._settings = settings
        self._token = token
        self._stopping = GracefulStop(settings.transfer.grace_period)
        self._stop = self._stopping.signal
        self._pass_due = asyncio.Event()
        self._stopping.also(self._pass_due.set)  # the runner loop wakes to see the stop

    async def run(self) -> int:
        """Run until a signal; always returns exit code 0 after a clean shutdown."""
        with self._stopping.on_signals():
            return await self._serve()

    async def _serve(self) -> int:
        # The HTTP endpoints start before the first pass and stop before the runtime closes.
        async with (
            Runtime(
                self._settings,
                self._token,
                stop=self._stop,
                metrics=self._settings.http is not None,  # served at /metrics
            ) as runtime,
            serve_http(self._settings, runtime),
        ):
            runtime.observers.append(systemd.StatusObserver())
            scheduler = self._start_scheduler()
            watchdog = systemd.start_watchdog()
            # READY=1 last, once everything that serves is up (scheduler, HTTP listener).
            systemd.notify_ready()
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
        self._stopping.request()

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
        log.info("daemon started", schedule=describe_schedule(self._settings.schedule))
        return scheduler

    def _announce_pass(self) -> None:
        self._pass_due.set()

    async def _run_passes(self, runtime: Runtime) -> None:
        while True:
            await self._pass_due.wait()
            if self._stop.is_set():
                return
            self._pass_due.clear()
            await self._run_one_pass(runtime)

    async def _run_one_pass(self, runtime: Runtime) -> None:
        try:
            await self._stopping.run_pass(SyncPass(runtime).run())
        except Exception as error:  # the daemon outlives a pass's bug; the next pass runs
            log.error("pass crashed", error=repr(error))

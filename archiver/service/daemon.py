"""The daemon: a pass at start, then one per schedule tick, until SIGTERM or SIGINT.

APScheduler only *announces* that a pass is due; one runner loop runs passes.
So passes never overlap, and ticks that fall while a pass runs collapse into
one pass right after it (a missed pass runs once, not many times).
"""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from archiver.config.settings import Settings
from archiver.core.stopping import StopSignal
from archiver.service import systemd
from archiver.service.http import serve_http
from archiver.service.schedule import build_trigger, describe_schedule
from archiver.sync.runtime import Runtime
from archiver.sync.sync_pass import SyncPass

log = structlog.get_logger(__name__)


class Daemon:
    """Runs passes on a schedule and shuts down gracefully."""

    def __init__(self, settings: Settings, token: str) -> None:
        self._settings = settings
        self._token = token
        self._stop = StopSignal()
        self._pass_due = asyncio.Event()

    async def run(self) -> int:
        """Run until a signal; always returns exit code 0 after a clean shutdown."""
        self._install_signal_handlers()
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
        if not self._stop.is_set():
            systemd.notify_stopping()
            log.info(
                "stopping: no new work; transfers in flight may finish",
                grace_seconds=self._settings.transfer.grace_period.total_seconds(),
            )
        self._stop.set()
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
        sync_pass = SyncPass(runtime)
        task = asyncio.create_task(sync_pass.run())
        stop_waiter = asyncio.create_task(self._stop.wait())
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

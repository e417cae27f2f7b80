"""The parts of one backup, fetched side by side and handed to the writer in order.

Parts start in order, each once the backup's `Window` admits its first byte and
a file slot is free (`max_concurrent_downloads` files in flight over every
backup, a file holding its slot until all its bytes arrived). So small parts run
side by side, a big part's next one starts while its last segments arrive, and
no connection opens for bytes that could only wait. The writer asks for each
part (`part`) and takes its bytes in order; where a part comes after one whose
size is not known yet, its start waits for that size.

The first part that fails fails the whole backup at once: every wait of the
writer raises that error. After a stop no further part starts (the writer gets
`Stopped` when it reaches one); parts already started go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from archiver.core.stopping import StopSignal
from archiver.transfer.part_fetch import FetchSettings, PartFetch
from archiver.transfer.part_source import PartFacts, PartSource
from archiver.transfer.segments import Window


@dataclass(frozen=True)
class PartToFetch:
    """A part the writer needs, from `start` on (the bytes before it are in storage)."""

    index: int
    source: PartSource
    start: int = 0
    known: PartFacts | None = None  # what an earlier process recorded, for a resume


class BackupFetch:
    """Fetches `parts` (in backup order) side by side; an async context manager."""

    def __init__(
        self,
        settings: FetchSettings,
        slots: asyncio.Semaphore,
        stop: StopSignal,
        parts: Sequence[PartToFetch],
        *,
        window: Window,
        base: int,
    ) -> None:
        self._settings = settings
        self._slots = slots
        self._stop = stop
        self._parts = parts
        self._window = window
        self._base = base  # where the first part's byte 0 is in the joined backup
        self._fetches: dict[int, PartFetch] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduler: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> BackupFetch:
        self._scheduler = asyncio.create_task(self._schedule())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tasks = [*self._tasks, *([self._scheduler] if self._scheduler else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for fetch in self._fetches.values():
            fetch.drop()

    async def part(self, index: int) -> PartFetch:
        """The fetch of part `index`, once it started; raises what failed the backup."""
        while index not in self._fetches:
            if self._failure is not None:
                raise self._failure
            self._changed.clear()
            await self._changed.wait()
        return self._fetches[index]

    async def _schedule(self) -> None:
        base = self._base
        try:
            for part in self._parts:
                await self._window.admit(base + part.start)
                await self._stop.unless_stopped(self._slots.acquire())
                fetch = PartFetch(
                    self._settings, part.source, start=part.start, known=part.known,
                    base=base, window=self._window,
                )
                self._fetches[part.index] = fetch
                task = asyncio.create_task(self._run(fetch))
                task.add_done_callback(lambda _: self._slots.release())
                self._tasks.add(task)
                self._changed.set()
                base += await fetch.size()
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # Stopped, or a part failed before its size came
            self._fail(error, abort=False)

    async def _run(self, fetch: PartFetch) -> None:
        try:
            await fetch.run()
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            self._fail(error, abort=True)

    def _fail(self, error: BaseException, *, abort: bool) -> None:
        """Parts not started yet raise `error`; with `abort`, every started one too."""
        if self._failure is None:
            self._failure = error
        self._changed.set()
        if not abort:
            return
        for fetch in self._fetches.values():
            fetch.fail(self._failure)
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        if self._scheduler is not None:
            self._scheduler.cancel()

"""The archive as a whole: the state (and, for writers, its lock), the destinations, a thread pool.

A pass opens it inside `archiver.sync.runtime.Runtime`; `prune`, `verify` and
`restore` open it alone, with no API token. Before anything reads the state it
is made to match the configured destinations (`archiver.lifecycle.destinations`):
a new (or deleted) state, or a new destination, is read from what storage holds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

from archiver.config.settings import Settings
from archiver.lifecycle.destinations import reconcile
from archiver.state.store import StateStore
from archiver.storage.destinations import Destination, open_destinations


@dataclass(frozen=True)
class Archive:
    """An open archive: what is recorded (`state`) and where it is kept (`destinations`)."""

    settings: Settings
    state: StateStore
    destinations: tuple[Destination, ...]
    executor: ThreadPoolExecutor
    # Destinations that could not be read when opening (name -> why): not usable now.
    unreadable: dict[str, str] = field(default_factory=dict)

    def destination(self, name: str) -> Destination:
        """The open destination called `name` (a configured one)."""
        return next(d for d in self.destinations if d.name == name)


@asynccontextmanager
async def open_archive(
    settings: Settings, *, lock: bool, workers: int = 4
) -> AsyncIterator[Archive]:
    """Open the state (taking the instance lock when `lock`) and every destination; close after.

    Readers (verify, restore) do not take the lock, so they work beside a running
    daemon; writers (a pass, prune) must, or a second one exits with code 3.
    """
    async with AsyncExitStack() as stack:
        state = StateStore.open(settings.state.path)
        stack.callback(state.close)
        if lock:
            state.lock.acquire()
            stack.callback(state.lock.release)
        executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="c66-io")
        stack.callback(executor.shutdown, wait=True, cancel_futures=True)
        destinations = open_destinations(settings, executor=executor)
        for destination in destinations:
            stack.push_async_callback(destination.storage.aclose)
        unreadable = await reconcile(state, destinations, writer=lock)
        yield Archive(settings, state, destinations, executor, unreadable)

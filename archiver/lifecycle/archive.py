"""The archive as a whole: the state (and, for writers, its lock), the storage, a thread pool.

A pass opens it inside `archiver.sync.runtime.Runtime`; `prune`, `verify` and
`restore` open it alone, with no API token. A new (or deleted) state is
rebuilt from what storage holds before anything reads it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from archiver.config.settings import Settings
from archiver.lifecycle.rebuild import rebuild_from_storage
from archiver.state.store import StateStore
from archiver.storage import open_storage
from archiver.storage.base import Storage


@dataclass(frozen=True)
class Archive:
    """An open archive: what is recorded (`state`) and where it is kept (`storage`)."""

    settings: Settings
    state: StateStore
    storage: Storage
    executor: ThreadPoolExecutor


@asynccontextmanager
async def open_archive(
    settings: Settings, *, lock: bool, workers: int = 4
) -> AsyncIterator[Archive]:
    """Open the state (taking the instance lock when `lock`) and the storage; close both after.

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
        storage = open_storage(settings.storage, executor=executor)
        stack.push_async_callback(storage.aclose)
        if state.created:
            await rebuild_from_storage(state, storage)
        yield Archive(settings, state, storage, executor)

"""The one way to build a Cloud 66 client: with the hourly budget every process shares.

Cloud 66 allows 3,000 requests an hour per user, and the daemon, a one-shot
pass, `check-config`, `import` and `backup-task` may run side by side on one
state. Each client built here starts from the requests of the trailing hour in
the state's request log and adds its own, so together they stay under
`[api] requests_per_hour`. With no state yet (nothing has run here), there is
no history to respect and none is created: `check-config` on a fresh install
leaves no files behind.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from archiver.cloud66.budget import WINDOW_SECONDS, RequestBudget
from archiver.cloud66.client import Cloud66Client, RequestListener
from archiver.config.settings import Settings
from archiver.core.stopping import StopSignal
from archiver.state.store import StateStore


def shared_budget(settings: Settings, state: StateStore | None) -> RequestBudget:
    """A budget seeded with the trailing hour's requests of every process on `state`."""
    if state is None:
        return RequestBudget(settings.api.requests_per_hour)
    now = time.time()
    state.api_requests.forget_before(now - WINDOW_SECONDS)
    return RequestBudget(
        settings.api.requests_per_hour,
        history=state.api_requests.since(now - WINDOW_SECONDS),
        on_acquire=state.api_requests.add,
    )


def build_client(
    settings: Settings,
    token: str,
    budget: RequestBudget,
    *,
    stop: StopSignal | None = None,
    on_request: RequestListener | None = None,
) -> Cloud66Client:
    """A client for `[api]` that spends `budget` (see `shared_budget`)."""
    return Cloud66Client(settings.api, token, budget=budget, stop=stop, on_request=on_request)


@asynccontextmanager
async def api_client(settings: Settings, token: str) -> AsyncIterator[Cloud66Client]:
    """A client for a command that runs beside (or without) a daemon, closed after use."""
    state = StateStore.open_existing(settings.state.path)
    try:
        async with build_client(settings, token, shared_budget(settings, state)) as client:
            yield client
    finally:
        if state is not None:
            state.close()

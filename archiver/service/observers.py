"""Observers of passes: notifications and metrics hear about each pass here.

An observer must never fail or stall a pass: `tell_observers` bounds each
call and logs (never raises) what goes wrong.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import structlog

from archiver.model.summary import PassSummary

log = structlog.get_logger(__name__)

# An observer's whole call (retries included) is cut off after this long.
OBSERVER_TIMEOUT_SECONDS = 60.0


class PassObserver(Protocol):
    """Hears when a pass starts and how it ended."""

    async def pass_started(self) -> None:
        """A pass is starting."""

    async def pass_finished(self, summary: PassSummary) -> None:
        """A pass ended (also when it failed)."""


async def tell_observers(
    observers: Sequence[PassObserver],
    call: Callable[[PassObserver], Awaitable[None]],
    *,
    timeout: float = OBSERVER_TIMEOUT_SECONDS,  # noqa: ASYNC109 -- a bound per observer, not on the caller
) -> None:
    """Run `call` on every observer concurrently; log failures and time-outs, never raise."""

    async def guarded(observer: PassObserver) -> None:
        try:
            await asyncio.wait_for(call(observer), timeout)
        except Exception as error:  # an observer's trouble is never the pass's
            log.warning("pass observer failed", observer=type(observer).__name__, error=repr(error))

    await asyncio.gather(*(guarded(observer) for observer in observers))

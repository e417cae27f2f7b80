"""A loopback HTTP receiver for pings, webhooks and Apprise's json:// posts, and its fixture."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    body: bytes


@dataclass
class Receiver:
    """A loopback HTTP server that records requests; it can answer 500 or hang."""

    base_url: str = ""
    requests: list[Received] = field(default_factory=list)
    mode: str = "ok"  # "ok" | "fail" (500) | "hang" (longer than any timeout here)
    release: asyncio.Event = field(default_factory=asyncio.Event)  # ends hangs at teardown

    def paths(self) -> list[str]:
        """The paths requested, in order."""
        return [request.path for request in self.requests]

    def webhook_bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies posted to /hook."""
        return [json.loads(r.body) for r in self.requests if r.path == "/hook"]

    def json_bodies(self, path: str) -> list[dict[str, Any]]:
        """The JSON bodies posted to `path` (Apprise's json:// posts, webhooks)."""
        return [json.loads(r.body) for r in self.requests if r.path == path]

    def texts(self, path: str) -> list[str]:
        """The bodies posted to `path`, as text (healthchecks /log)."""
        return [r.body.decode() for r in self.requests if r.path == path]

    async def handle(self, request: web.Request) -> web.Response:
        """Record, then answer as the mode says."""
        self.requests.append(Received(request.path, await request.read()))
        if self.mode == "hang":
            await asyncio.wait_for(self.release.wait(), 60)
        return web.Response(status=500 if self.mode == "fail" else 200, text="OK")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A receiver listening on a free loopback port."""
    state = Receiver()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", state.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    state.release.set()
    await runner.cleanup()

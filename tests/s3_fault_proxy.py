"""A reverse proxy in front of the real S3 test server that refuses or holds chosen requests.

SeaweedFS never runs out of room on its own in a test, and a kill -9 cannot be timed
to land between two requests. This proxy makes both happen on purpose: requests pass
to SeaweedFS unchanged (the Host header too, so SigV4 signatures still match) unless
they match `refuse` (answered 507 `XMinioStorageFull`, as MinIO says its drive is
full) or `hold` (kept waiting until `release`, so the test can act while the client
waits; `held` is set when one arrives).

    async with S3FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.refuse = is_manifest_put
        ... endpoint_url = proxy.url ...
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType

import aiohttp
from aiohttp import web

Rule = Callable[[web.Request], bool]
# Hop-by-hop headers and those aiohttp sets itself; everything else goes through as sent.
_NOT_FORWARDED = {"connection", "keep-alive", "transfer-encoding", "expect", "te", "upgrade"}
_NOT_RETURNED = {"connection", "keep-alive", "transfer-encoding", "content-length", "date",
                 "server"}
_STORAGE_FULL = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>XMinioStorageFull</Code>'
    "<Message>Storage backend has reached its minimum free drive threshold. "
    "Please delete a few objects to proceed.</Message></Error>"
)


def is_manifest_put(request: web.Request) -> bool:
    """A PutObject of a backup's manifest."""
    return request.method == "PUT" and request.path.endswith("/manifest.json")


class S3FaultProxy:
    """The proxy, started and stopped with `async with`; `url` is its endpoint."""

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream.rstrip("/")
        self.refuse: Rule | None = None
        self.hold: Rule | None = None
        self.held = asyncio.Event()
        self.refused = 0
        self._released = asyncio.Event()
        self._forward_held = True
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    def release(self, *, forward: bool) -> None:
        """Let held requests go: on to the server, or (`forward=False`) nowhere, answered
        503 as if they never left a client that died while they waited."""
        self.hold = None
        self._forward_held = forward
        self._released.set()

    async def __aenter__(self) -> S3FaultProxy:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self.refuse is not None and self.refuse(request):
            self.refused += 1
            return web.Response(status=507, text=_STORAGE_FULL, content_type="application/xml")
        if self.hold is not None and self.hold(request):
            self.held.set()
            await self._released.wait()
            if not self._forward_held:
                return web.Response(status=503, text="dropped by the test proxy")
        return await self._forward(request, body)

    async def _forward(self, request: web.Request, body: bytes) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        async with self._session.request(
            request.method, self._upstream + request.raw_path, headers=headers, data=body,
            allow_redirects=False, skip_auto_headers=("Accept-Encoding", "Content-Type"),
        ) as answer:
            payload = await answer.read()
            returned = {k: v for k, v in answer.headers.items() if k.lower() not in _NOT_RETURNED}
            if request.method == "HEAD":  # no body, but the size it would have
                returned["Content-Length"] = answer.headers.get("Content-Length", "0")
                return web.Response(status=answer.status, headers=returned)
            return web.Response(status=answer.status, headers=returned, body=payload)

"""A file's pre-signed URL, shared by its segments: asked for once, replaced once when it expires.

S3 checks a pre-signed URL's expiry when a request starts, so a running GET
survives it and the next one does not. Every segment of a file asks for its URL
here; a segment that finds it refused or about to expire asks for a replacement
of the URL it used, and every segment that does so at the same time shares one
request to Cloud 66 (a URL already replaced is simply handed out).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

UrlSource = Callable[[], Awaitable[str]]

# Refresh a pre-signed URL before a request when it expires within this margin.
_URL_REFRESH_MARGIN_SECONDS = 30.0


def url_expires_soon(url: str, *, margin: float = _URL_REFRESH_MARGIN_SECONDS) -> bool:
    """True when a pre-signed URL's `Expires` (SigV2) or `X-Amz-Expires` (SigV4) is near."""
    query = parse_qs(urlsplit(url).query)
    try:
        if "Expires" in query:
            return float(query["Expires"][0]) - time.time() < margin
        if "X-Amz-Date" in query and "X-Amz-Expires" in query:
            signed = time.mktime(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ"))
            signed -= time.timezone  # X-Amz-Date is UTC; mktime assumed local time
            return signed + float(query["X-Amz-Expires"][0]) - time.time() < margin
    except (ValueError, IndexError):
        return True
    return False


class FreshUrls:
    """The current URL of one file, and its replacement when it expires."""

    def __init__(self, fetch: UrlSource) -> None:
        self._fetch = fetch
        self._url: str | None = None
        self._pending: asyncio.Future[str] | None = None

    async def current(self) -> str:
        """The URL to use now (asked for on first use)."""
        if self._url is not None:
            return self._url
        return await self._refresh()

    async def replace(self, stale: str) -> str:
        """A URL other than `stale`: the one another segment already got, or a new one."""
        if self._url is not None and self._url != stale:
            return self._url
        return await self._refresh()

    async def _refresh(self) -> str:
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._fetch())
            self._pending.add_done_callback(self._store)
        return await asyncio.shield(self._pending)

    def _store(self, request: asyncio.Future[str]) -> None:
        self._pending = None
        if not request.cancelled() and request.exception() is None:
            self._url = request.result()

    def close(self) -> None:
        """Cancel a request nobody waits for any more."""
        if self._pending is not None:
            self._pending.cancel()

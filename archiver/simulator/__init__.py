"""An embedded Cloud 66 API v3 and S3-like blob host, for the demo, the tests and the benchmark.

One aiohttp application serves the API under ``/api/3`` and the backup files under
``/blobs/``. It reproduces the upstream behaviour the archiver depends on (see
``docs/cloud66-api.md``): the response envelope and pagination, bearer-token auth,
the twice-encoded pre-signed ``public_url``, S3's signature and expiry errors, Range
requests and ETags. Faults (5xx, throttling, broken JSON, cut or slow downloads,
expired URLs) can be switched on at runtime through :attr:`Simulator.faults`, and every
request is counted in :attr:`Simulator.stats` so tests can assert exact call counts.

Backup content is deterministic pseudo-random bytes written once to ``blob_dir`` (one
file per part), so even a 1 GiB backup never sits in memory and is served with
``sendfile`` when no fault is active.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import math
import re
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import parse_qsl, quote

from aiohttp import web
from aiohttp.typedefs import Middleware

from archiver.simulator.account import Account
from archiver.simulator.content import CHUNK_SIZE
from archiver.simulator.records import Backup, Faults, Part, SimStats, Stack

__all__ = [
    "CHUNK_SIZE",
    "Faults",
    "SimStats",
    "Simulator",
    "SimulatorServer",
    "main",
    "populate_demo",
]

API_PREFIX = "/api/3"
BLOB_PREFIX = "/blobs"
ACCESS_KEY_ID = "SIMKEY"
WARNING_HEADER = "X-Cloud66-Warning"
DB_TYPES = ("mysql", "postgresql", "redis", "mongodb")
_SAFE_SEGMENT = re.compile(r"[^A-Za-z0-9._-]")
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ----------------------------------------------------------------- content generation


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _safe(segment: str) -> str:
    """Make upstream-ish strings harmless as one URL path segment."""
    cleaned = _SAFE_SEGMENT.sub("_", segment).lstrip(".")
    return cleaned or "_"


# ------------------------------------------------------------------- S3 helpers


def _sign(secret: bytes, path: str, expires: int) -> str:
    """S3 SigV2 query signature: base64(HMAC-SHA1(secret, "GET\\n<path>\\n<expires>"))."""
    message = f"GET\n{path}\n{expires}".encode()
    return base64.b64encode(hmac.new(secret, message, hashlib.sha1).digest()).decode()


def _s3_error(status: int, code: str, message: str) -> web.Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{secrets.token_hex(8).upper()}</RequestId></Error>"
    )
    return web.Response(status=status, text=body, content_type="application/xml")


class _Refused(Exception):
    """Carries the error answer out of a lookup or check, up to the handler."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


class _Unsatisfiable(Exception):
    """The Range header asks for bytes beyond the object."""


def _parse_range(header: str, total: int) -> tuple[int, int] | None:
    """Parse a single ``bytes=`` range into inclusive (start, end).

    Returns None when the header is not a single byte range: S3 then answers 200 with
    the whole object. Raises _Unsatisfiable for ranges beyond the end (416).
    """
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # suffix range: the last N bytes
        length = int(last)
        if length == 0 or total == 0:
            raise _Unsatisfiable
        return max(0, total - length), total - 1
    start = int(first)
    end = total - 1 if last == "" else min(int(last), total - 1)
    if last != "" and int(last) < start:
        return None  # syntactically invalid: ignored, as RFC 9110 says
    if start >= total:
        raise _Unsatisfiable
    return start, end


# ------------------------------------------------------------------------ simulator


class Simulator(Account):
    """A simulated account served as one aiohttp application: the API and the blob host."""

    # ------------------------------------------------------------------- the app

    def app(self) -> web.Application:
        """One application: the API under /api/3 and the blobs under /blobs/."""
        app = web.Application(middlewares=[self._make_api_middleware()])
        json_ext = r"{ext:(?:\.json)?}"
        seg = r"[^{}/]+?"  # non-greedy so an optional .json suffix is not swallowed
        routes = [
            (f"{API_PREFIX}/stacks{json_ext}", self._list_stacks, "list_stacks"),
            (
                f"{API_PREFIX}/stacks/{{uid:{seg}}}/backups{json_ext}",
                self._list_backups,
                "list_backups",
            ),
            (
                f"{API_PREFIX}/stacks/{{uid:{seg}}}/backups/{{bid:\\d+}}{json_ext}",
                self._get_backup,
                "get_backup",
            ),
            (
                f"{API_PREFIX}/stacks/{{uid:{seg}}}/backups/{{bid:\\d+}}/files{json_ext}",
                self._list_files,
                "list_files",
            ),
            (
                f"{API_PREFIX}/stacks/{{uid:{seg}}}/backups/{{bid:\\d+}}/files/{{fid:{seg}}}"
                f"{json_ext}",
                self._get_file,
                "get_file",
            ),
        ]
        for path, handler, name in routes:
            app.router.add_get(path, handler, name=name)
        blob = BLOB_PREFIX + r"/{stack}/backups/{db}/{bid:\d+}/{fid}/{nonce}/{name}"
        app.router.add_get(blob, self._blob_get, name="blob", allow_head=False)
        app.router.add_route("HEAD", blob, self._blob_head, name="blob_head")
        return app

    # ------------------------------------------------------------ API plumbing

    def _make_api_middleware(self) -> Middleware:
        @web.middleware
        async def api_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
            if not request.path.startswith(API_PREFIX + "/"):
                return await handler(request)
            response = await self._api_gate(request, handler)
            if self.warning is not None:
                response.headers[WARNING_HEADER] = self.warning
            return response

        return api_middleware

    async def _api_gate(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """Count the request, then apply auth, the rate limit and the injected faults."""
        self._record_api_request(request)
        # Explicit None checks: aiohttp responses are mappings, so never rely on truthiness.
        refusal = self._check_auth(request)
        if refusal is None:
            refusal = self._check_limits()
        if refusal is not None:
            return refusal
        try:
            return await handler(request)
        except _Refused as refused:
            return refused.response
        except web.HTTPException as exc:  # unmatched paths and wrong methods
            code = "not_found" if exc.status == 404 else "bad_request"
            return _api_error(exc.status, code, exc.reason)

    def _record_api_request(self, request: web.Request) -> None:
        now = time.monotonic()
        route_name = request.match_info.route.name or "unknown"
        self.stats.api_requests += 1
        self.stats.api_requests_by_path[route_name] += 1
        self.stats.api_request_times.append(now)
        self.api_window.append(now)
        while self.api_window and self.api_window[0] < now - 3600:
            self.api_window.popleft()

    def _check_auth(self, request: web.Request) -> web.Response | None:
        expected = f"Bearer {self.token}"
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return _api_error(401, "unauthenticated", "The access token is missing or invalid")
        account = request.headers.get("X-Account")
        if self.account_id is not None and account is not None and account != str(self.account_id):
            return _api_error(403, "forbidden", "This token cannot access that account")
        return None

    def _check_limits(self) -> web.Response | None:
        """Rate limit first (as upstream), then the one-shot faults, which count down."""
        limit = self.requests_per_hour
        if limit is not None and len(self.api_window) > limit:
            return self._throttled()
        if self.faults.api_errors > 0:
            self.faults.api_errors -= 1
            html = "<html><body><h1>500 Internal Server Error</h1></body></html>"
            return web.Response(status=500, text=html, content_type="text/html")
        if self.faults.throttle > 0:
            self.faults.throttle -= 1
            return self._throttled()
        return None

    def _throttled(self) -> web.Response:
        response = _api_error(503, "throttled", "Too many requests: rate limit exceeded")
        if self.faults.throttle_retry_after is not None:
            response.headers["Retry-After"] = f"{self.faults.throttle_retry_after:g}"
        return response

    def _page(self, request: web.Request, items: list[dict[str, Any]]) -> web.Response:
        """Wrap a list in Cloud 66's envelope, cutting the requested page out of it."""
        raw = request.query.get("page", "1")
        if not raw.isdigit() or int(raw) < 1:
            return _api_error(400, "bad_request", "page must be a positive integer")
        page, per_page, total = int(raw), self.per_page, len(items)
        pages = max(1, math.ceil(total / per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        pagination = {
            "previous": page - 1 if page > 1 else None,
            "next": page + 1 if page < pages else None,
            "current": page,
            "per_page": per_page,
            "count": total,
            "pages": pages,
        }
        return web.json_response({"response": chunk, "count": total, "pagination": pagination})

    def _find_stack(self, request: web.Request) -> Stack:
        stack = self.find_stack(request.match_info["uid"])
        if stack is None:
            raise _Refused(_api_error(404, "not_found", "Stack not found"))
        return stack

    def _find_backup(self, request: web.Request) -> Backup:
        stack = self._find_stack(request)
        backup = self.find_backup(int(request.match_info["bid"]))
        if backup is None or backup.stack_uid != stack.uid:
            raise _Refused(_api_error(404, "not_found", "Backup not found"))
        return backup

    # ------------------------------------------------------------ API handlers

    async def _list_stacks(self, request: web.Request) -> web.Response:
        return self._page(request, [self._stack_json(s) for s in self.stacks()])

    async def _list_backups(self, request: web.Request) -> web.Response:
        stack = self._find_stack(request)
        if stack.uid in self.faults.malformed_json_stacks:
            # A truncated body with a JSON content type, as a proxy cutting the answer gives.
            return web.Response(
                text='{"response": [{"id": 1, "db_type": "mys', content_type="application/json"
            )
        backups = self.sorted_backups(stack.uid)
        wanted = request.query.get("db_type", "")
        if wanted and wanted != "all":
            types = {t.strip() for t in wanted.split(",")}
            backups = [b for b in backups if b.db_type in types]
        # `group` is accepted and ignored: the simulator has a single backup group.
        return self._page(request, [self._backup_json(b) for b in backups])

    async def _get_backup(self, request: web.Request) -> web.Response:
        backup = self._find_backup(request)
        return web.json_response({"response": self._backup_json(backup)})

    async def _list_files(self, request: web.Request) -> web.Response:
        backup = self._find_backup(request)
        return self._page(request, [{"id": p.file_id, "name": p.name} for p in backup.parts])

    async def _get_file(self, request: web.Request) -> web.Response:
        backup = self._find_backup(request)
        part = next((p for p in backup.parts if p.file_id == request.match_info["fid"]), None)
        if part is None:
            return _api_error(404, "not_found", "File not found")
        self.stats.public_urls_issued += 1
        url = self._public_url(request, backup, part)
        return web.json_response({"response": {"ok": True, "public_url": url}})

    def _public_url(self, request: web.Request, backup: Backup, part: Part) -> str:
        """A pre-signed URL whose query is %-encoded twice, as Cloud 66 returns it."""
        expires = int(time.time() + self.url_lifetime)
        if self.faults.expired_urls > 0:
            self.faults.expired_urls -= 1
            expires = int(time.time()) - 60
        # A nonce in the path varies the signature until it holds '/' or '+', so every
        # URL exercises the double-encoding quirk ('=' padding is always there).
        for nonce in range(256):
            path = (
                f"{BLOB_PREFIX}/{_safe(backup.stack_uid)}/backups/{_safe(backup.db_type)}/"
                f"{backup.id}/{_safe(part.file_id)}/n{nonce:x}/{_safe(part.name)}"
            )
            signature = _sign(self.signing_secret, path, expires)
            if "/" in signature or "+" in signature:
                break
        twice = quote(quote(signature, safe=""), safe="")
        query = f"AWSAccessKeyId={ACCESS_KEY_ID}&Expires={expires}&Signature={twice}"
        return f"{request.scheme}://{request.host}{path}?{query}"

    @staticmethod
    def _stack_json(stack: Stack) -> dict[str, Any]:
        created = _iso(stack.created_at)
        return {
            "uid": stack.uid,
            "name": stack.name,
            "environment": stack.environment,
            "git": "",
            "git_branch": "main",
            "cloud": "aws",
            "fqdn": f"{_safe(stack.uid).lower()}.c66.me",
            "language": "ruby",
            "framework": "rails",
            "status": 1,
            "health": 3,
            "maintenance_mode": False,
            "has_loadbalancer": False,
            "created_at_iso": created,
            "updated_at_iso": created,
            "last_activity_iso": created,
            "redeploy_hook": None,
        }

    @staticmethod
    def _backup_json(backup: Backup) -> dict[str, Any]:
        server_uid = hashlib.sha1(backup.stack_uid.encode(), usedforsecurity=False).hexdigest()
        when = _iso(backup.backup_date)
        stamp = backup.backup_date.astimezone(UTC).strftime("%Y.%m.%d.%H.%M.%S")
        return {
            "id": backup.id,
            "server_uid": server_uid,
            "db_type": backup.db_type,
            "database_name": backup.database_name,
            "file_base": "",
            "backup_date_iso": when,
            "backup_status": backup.status,
            "backup_result": "" if backup.status == 0 else "mysqldump: Got error 2013",
            "restore_status": 0,
            "restore_result": None,
            "created_at_iso": when,
            "updated_at_iso": when,
            "verify_status": 0,
            "verify_result": None,
            "storage_path": f"{server_uid[:32]}/backups/{_safe(backup.stack_uid)}/"
            f"{backup.db_type}/{backup.database_name}/{stamp}",
            "skip_tables": "",
            "backup_size": 0,
            "logical_backup": False,  # unknown to old clients: they must ignore it
        }

    # ----------------------------------------------------------- blob host

    async def _blob_head(self, request: web.Request) -> web.StreamResponse:
        # A pre-signed GET URL does not allow HEAD: S3 answers 403 without a body.
        self.stats.blob_requests += 1
        self.stats.blob_refusals += 1
        return web.Response(status=403)

    def _authorize_blob(self, request: web.Request) -> Part:
        """Check the signature and expiry like S3 (decoding the query once), find the part."""
        raw_path, _, raw_query = request.raw_path.partition("?")
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        signature, expires = params.get("Signature"), params.get("Expires", "")
        if params.get("AWSAccessKeyId") is None or signature is None or not expires.isdigit():
            message = "Query-string authentication requires the Signature, Expires and "
            raise _Refused(_s3_error(403, "AccessDenied", message + "AWSAccessKeyId parameters"))
        good = _sign(self.signing_secret, raw_path, int(expires))
        if params["AWSAccessKeyId"] != ACCESS_KEY_ID or not hmac.compare_digest(
            good.encode(), signature.encode()
        ):
            raise _Refused(
                _s3_error(
                    403,
                    "SignatureDoesNotMatch",
                    "The request signature we calculated does not match the signature you "
                    "provided. Check your key and signing method.",
                )
            )
        if int(expires) < time.time():
            raise _Refused(_s3_error(403, "AccessDenied", "Request has expired"))
        backup = self.find_backup(int(request.match_info["bid"]))
        fid = request.match_info["fid"]
        part = next((p for p in backup.parts if _safe(p.file_id) == fid), None) if backup else None
        if part is None or not part.path.exists():
            raise _Refused(_s3_error(404, "NoSuchKey", "The specified key does not exist."))
        return part

    async def _blob_get(self, request: web.Request) -> web.StreamResponse:
        self.stats.blob_requests += 1
        try:
            part = self._authorize_blob(request)
        except _Refused as refused:
            self.stats.blob_refusals += 1
            return refused.response
        if self.faults.blob_errors > 0 or (
            self.faults.ranged_errors > 0 and "Range" in request.headers
        ):
            if self.faults.blob_errors > 0:
                self.faults.blob_errors -= 1
            else:
                self.faults.ranged_errors -= 1
            return _s3_error(500, "InternalError", "We encountered an internal error.")
        etag = f'"{part.md5}"'
        span = self._requested_span(request, part, etag)
        if isinstance(span, web.Response):
            self.stats.blob_refusals += 1
            return span
        start, count, partial = span
        response = web.StreamResponse(status=206 if partial else 200)
        response.headers.update({"ETag": etag, "Accept-Ranges": "bytes"})
        response.content_type = "application/x-tar"
        if partial:
            response.headers["Content-Range"] = f"bytes {start}-{start + count - 1}/{part.size}"
        response.content_length = count
        return await self._send_body(request, response, part, start, count)

    def _requested_span(
        self, request: web.Request, part: Part, etag: str
    ) -> tuple[int, int, bool] | web.Response:
        """(start, byte count, is_partial) for the request, or the 416 answer."""
        header = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        if header is not None and self.faults.ignore_range > 0:
            self.faults.ignore_range -= 1
            header = None  # like a proxy that drops Range: the whole object, 200
        if header is None or (if_range is not None and if_range.strip() != etag):
            return 0, part.size, False  # If-Range mismatch: the whole object, 200
        try:
            parsed = _parse_range(header, part.size)
        except _Unsatisfiable:
            response = _s3_error(416, "InvalidRange", "The requested range is not satisfiable")
            response.headers["Content-Range"] = f"bytes */{part.size}"
            return response
        if parsed is None:
            return 0, part.size, False
        return parsed[0], parsed[1] - parsed[0] + 1, True

    async def _send_body(
        self,
        request: web.Request,
        response: web.StreamResponse,
        part: Part,
        start: int,
        count: int,
    ) -> web.StreamResponse:
        """Stream the bytes, applying the cut/slow faults; sendfile when none is active."""
        cut_at: int | None = None
        if self.faults.cut_downloads > 0:
            self.faults.cut_downloads -= 1
            after = self.faults.cut_after_bytes
            cut_at = min(count, count // 2 if after is None else after)
        rate: int | None = None
        if self.faults.slow_downloads > 0:
            self.faults.slow_downloads -= 1
            rate = max(1, self.faults.slow_bytes_per_second)
        tally = _Tally(self.stats)
        try:
            await response.prepare(request)
            source = await asyncio.to_thread(part.path.open, "rb")
            try:
                if cut_at is not None:
                    await self._stream(response, source, start, cut_at, rate, tally, last=False)
                    tally.close()
                    self._drop_connection(request)
                    return response
                if rate is None and count > 1:
                    await self._sendfile(request, response, source, start, count, tally)
                else:
                    await self._stream(response, source, start, count, rate, tally, last=True)
            finally:
                source.close()
            tally.complete()  # no-op unless the body was empty
            await response.write_eof()
            return response
        finally:
            tally.close()

    async def _sendfile(
        self,
        request: web.Request,
        response: web.StreamResponse,
        source: IO[bytes],
        start: int,
        count: int,
        tally: _Tally,
    ) -> None:
        """Zero-copy fast path, as aiohttp's FileResponse does (headers are already sent).

        The last byte goes through the normal writer after the counters are updated, so
        a client that has the whole body always sees final stats (no race in tests).
        """
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("Connection lost")
        await asyncio.get_running_loop().sendfile(transport, source, start, count - 1)
        tally.sent(count - 1)
        last = await asyncio.to_thread(_read_at, source, start + count - 1, 1)
        tally.sent(len(last))
        tally.complete()
        await response.write(last)

    async def _stream(
        self,
        response: web.StreamResponse,
        source: IO[bytes],
        start: int,
        count: int,
        rate: int | None,
        tally: _Tally,
        *,
        last: bool,
    ) -> None:
        """Copy ``count`` bytes from ``start`` in chunks, paced to ``rate`` bytes/s if set.

        With ``last``, the download is tallied complete just before its final chunk goes out.
        """
        chunk = CHUNK_SIZE if rate is None else max(1, min(CHUNK_SIZE, rate // 20))
        began, sent = time.monotonic(), 0
        while sent < count:
            data = await asyncio.to_thread(_read_at, source, start + sent, min(chunk, count - sent))
            if not data:
                break
            sent += len(data)
            tally.sent(len(data))
            if last and sent >= count:
                tally.complete()
            await response.write(data)
            if rate is not None:
                # Pace on the total so far, not per chunk, so sleeps do not drift.
                await asyncio.sleep(max(0.0, began + sent / rate - time.monotonic()))

    @staticmethod
    def _drop_connection(request: web.Request) -> None:
        """End the connection mid-body; close() still flushes what was written."""
        transport = request.transport
        if transport is not None:
            transport.close()


def _read_at(source: IO[bytes], offset: int, size: int) -> bytes:
    """Seek and read in one thread hop."""
    source.seek(offset)
    return source.read(size)


class _Tally:
    """Download accounting for one blob GET; completion is counted exactly once."""

    def __init__(self, stats: SimStats) -> None:
        self.stats = stats
        self.open = True
        stats.downloads_started += 1
        stats.active_downloads += 1
        stats.max_concurrent_downloads = max(stats.max_concurrent_downloads, stats.active_downloads)

    def sent(self, size: int) -> None:
        self.stats.bytes_served += size

    def complete(self) -> None:
        if self.open:
            self.stats.downloads_completed += 1
            self.close()

    def close(self) -> None:
        if self.open:
            self.open = False
            self.stats.active_downloads -= 1


def _api_error(status: int, code: str, description: str) -> web.Response:
    return web.json_response({"error": code, "error_description": description}, status=status)


# --------------------------------------------------------------------- server


class SimulatorServer:
    """Run a :class:`Simulator` on a loopback port for the duration of an ``async with``."""

    def __init__(self, simulator: Simulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.simulator = simulator
        self.host = host
        self.port = port
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> SimulatorServer:
        # No access log: it would print pre-signed URLs, signatures included.
        # A short shutdown timeout: a stalled (slow-fault) download must not hold up exit.
        runner = web.AppRunner(
            self.simulator.app(), access_log=None, shutdown_timeout=1.0, handle_signals=False
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"http://{host}:{self.port}{API_PREFIX}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


# ----------------------------------------------------------------------- demo


def populate_demo(sim: Simulator) -> None:
    """Three stacks with mysql, postgresql, redis and mongodb backups, one multi-part
    backup (2.5 parts of the simulator's part_size) and one failed backup."""
    day = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    sim.add_stack("demo-shop-prod", "Shop", "production")
    sim.add_stack("demo-api-staging", "API", "staging")
    sim.add_stack("demo-analytics", "Analytics", "production")
    plan: list[tuple[str, str, str, int, int]] = [
        ("demo-shop-prod", "mysql", "shop", 300_000, 0),
        ("demo-shop-prod", "mysql", "shop", 320_000, 0),
        ("demo-shop-prod", "redis", "cache", 64_000, 0),
        ("demo-api-staging", "postgresql", "api", 500_000, 0),
        ("demo-api-staging", "postgresql", "api", 0, 1),  # failed: must be skipped
        ("demo-analytics", "mongodb", "events", 200_000, 0),
        ("demo-analytics", "mongodb", "events", sim.part_size * 5 // 2, 0),  # multi-part
    ]
    for n, (stack, db_type, name, size, status) in enumerate(plan):
        sim.add_backup(
            stack,
            db_type=db_type,
            database_name=name,
            size=max(size, 1),
            status=status,
            backup_date=day + timedelta(hours=6 * n),
        )


# ------------------------------------------------------------------------ CLI


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m archiver.simulator", description="Run the Cloud 66 API simulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--blob-dir", type=Path, default=None, help="default: a temp dir")
    parser.add_argument("--token", default="sim-token")
    parser.add_argument("--stacks", type=int, default=1)
    parser.add_argument("--backups-per-stack", type=int, default=1)
    parser.add_argument("--backup-size", type=int, default=1024)
    parser.add_argument("--part-size", type=int, default=350_000_000)
    parser.add_argument(
        "--multipart-backup-size",
        type=int,
        default=None,
        help="add one backup of this size to the first stack",
    )
    parser.add_argument(
        "--failed-backup",
        action="store_true",
        help="add one failed backup (status 1) to the first stack",
    )
    parser.add_argument("--per-page", type=int, default=30)
    parser.add_argument("--url-lifetime", type=float, default=300.0)
    parser.add_argument("--account-id", type=int, default=None)
    parser.add_argument("--demo", action="store_true", help="populate with populate_demo()")
    return parser.parse_args(argv)


def _populate_from_args(sim: Simulator, args: argparse.Namespace) -> None:
    if args.demo:
        populate_demo(sim)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for s in range(1, args.stacks + 1):
        uid = f"stack-{s}"
        sim.add_stack(uid, f"Stack {s}")
        for b in range(args.backups_per_stack):
            sim.add_backup(
                uid,
                db_type=DB_TYPES[b % len(DB_TYPES)],
                database_name=f"db_{s}",
                size=args.backup_size,
                backup_date=start + timedelta(days=b, hours=s),
            )
    first = "stack-1"
    if args.multipart_backup_size is not None:
        sim.add_backup(first, database_name="big_db", size=args.multipart_backup_size)
    if args.failed_backup:
        sim.add_backup(first, database_name="failed_db", size=1024, status=1)


async def _serve(args: argparse.Namespace, blob_dir: Path) -> None:
    sim = Simulator(
        token=args.token,
        blob_dir=blob_dir,
        part_size=args.part_size,
        url_lifetime=args.url_lifetime,
        per_page=args.per_page,
        account_id=args.account_id,
    )
    _populate_from_args(sim, args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with SimulatorServer(sim, args.host, args.port) as server:
        print(json.dumps({"base_url": server.base_url, "port": server.port}), flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m archiver.simulator``: serve until SIGTERM/SIGINT."""
    args = _parse_args(argv)
    with contextlib.ExitStack() as cleanup:
        blob_dir = args.blob_dir
        if blob_dir is None:
            blob_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="c66sim-")))
        try:
            asyncio.run(_serve(args, blob_dir))
        except KeyboardInterrupt:  # a second Ctrl-C during shutdown
            sys.exit(130)


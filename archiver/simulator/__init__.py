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
import contextlib
import hashlib
import hmac
import json
import math
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Middleware

from archiver.simulator.account import Account
from archiver.simulator.blobs import ACCESS_KEY_ID, BlobHost, blob_path, safe_segment, sign
from archiver.simulator.content import CHUNK_SIZE
from archiver.simulator.records import Backup, Faults, Part, SimStats, Stack
from archiver.simulator.refusals import Refused, api_error

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
WARNING_HEADER = "X-Cloud66-Warning"
DB_TYPES = ("mysql", "postgresql", "redis", "mongodb")
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        BlobHost(self).add_routes(app.router)
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
        except Refused as refused:
            return refused.response
        except web.HTTPException as exc:  # unmatched paths and wrong methods
            code = "not_found" if exc.status == 404 else "bad_request"
            return api_error(exc.status, code, exc.reason)

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
            return api_error(401, "unauthenticated", "The access token is missing or invalid")
        account = request.headers.get("X-Account")
        if self.account_id is not None and account is not None and account != str(self.account_id):
            return api_error(403, "forbidden", "This token cannot access that account")
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
        response = api_error(503, "throttled", "Too many requests: rate limit exceeded")
        if self.faults.throttle_retry_after is not None:
            response.headers["Retry-After"] = f"{self.faults.throttle_retry_after:g}"
        return response

    def _page(self, request: web.Request, items: list[dict[str, Any]]) -> web.Response:
        """Wrap a list in Cloud 66's envelope, cutting the requested page out of it."""
        raw = request.query.get("page", "1")
        if not raw.isdigit() or int(raw) < 1:
            return api_error(400, "bad_request", "page must be a positive integer")
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
            raise Refused(api_error(404, "not_found", "Stack not found"))
        return stack

    def _find_backup(self, request: web.Request) -> Backup:
        stack = self._find_stack(request)
        backup = self.find_backup(int(request.match_info["bid"]))
        if backup is None or backup.stack_uid != stack.uid:
            raise Refused(api_error(404, "not_found", "Backup not found"))
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
            return api_error(404, "not_found", "File not found")
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
            path = blob_path(backup, part, nonce)
            signature = sign(self.signing_secret, path, expires)
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
            "fqdn": f"{safe_segment(stack.uid).lower()}.c66.me",
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
            "storage_path": f"{server_uid[:32]}/backups/{safe_segment(backup.stack_uid)}/"
            f"{backup.db_type}/{backup.database_name}/{stamp}",
            "skip_tables": "",
            "backup_size": 0,
            "logical_backup": False,  # unknown to old clients: they must ignore it
        }


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

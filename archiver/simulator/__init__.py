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
import json
import signal
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

from aiohttp import web

from archiver.simulator.account import Account
from archiver.simulator.api import API_PREFIX, CloudApi
from archiver.simulator.blobs import BlobHost
from archiver.simulator.content import CHUNK_SIZE
from archiver.simulator.records import Faults, SimStats

__all__ = [
    "CHUNK_SIZE",
    "Faults",
    "SimStats",
    "Simulator",
    "SimulatorServer",
    "main",
    "populate_demo",
]

DB_TYPES = ("mysql", "postgresql", "redis", "mongodb")


# ------------------------------------------------------------------------ simulator


class Simulator(Account):
    """A simulated account served as one aiohttp application: the API and the blob host."""

    def app(self) -> web.Application:
        """One application: the API under /api/3 and the blobs under /blobs/."""
        api = CloudApi(self)
        app = web.Application(middlewares=[api.middleware()])
        api.add_routes(app.router)
        BlobHost(self).add_routes(app.router)
        return app


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

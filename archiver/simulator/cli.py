"""``python -m archiver.simulator``: fill an account from the command line, serve it on
loopback, print ``{"base_url": ..., "port": ...}`` as one JSON line, stop on SIGTERM/SIGINT."""

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

from archiver.simulator.account import Account
from archiver.simulator.populate import populate_demo
from archiver.simulator.server import Simulator, SimulatorServer

DB_TYPES = ("mysql", "postgresql", "redis", "mongodb")


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


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: where to listen, the account's settings and what to fill it with."""
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
    parser.add_argument(
        "--connection-rate", type=int, default=None,
        help="pace every blob body to this many bytes/s (one connection's share of a link)",
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds before every blob answer"
    )
    return parser.parse_args(argv)


def _populate_from_args(sim: Account, args: argparse.Namespace) -> None:
    """The demo set if asked, then ``stack-1`` .. ``stack-N``, then the first stack's extras."""
    if args.demo:
        populate_demo(sim)
    _add_stacks(sim, args.stacks, args.backups_per_stack, args.backup_size)
    first = "stack-1"
    if args.multipart_backup_size is not None:
        sim.add_backup(first, database_name="big_db", size=args.multipart_backup_size)
    if args.failed_backup:
        sim.add_backup(first, database_name="failed_db", size=1024, status=1)


def _add_stacks(sim: Account, stacks: int, backups_per_stack: int, backup_size: int) -> None:
    """``stack-<s>`` with one backup a day from 2025-01-01, cycling through the db types."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for s in range(1, stacks + 1):
        uid = f"stack-{s}"
        sim.add_stack(uid, f"Stack {s}")
        for b in range(backups_per_stack):
            sim.add_backup(
                uid,
                db_type=DB_TYPES[b % len(DB_TYPES)],
                database_name=f"db_{s}",
                size=backup_size,
                backup_date=start + timedelta(days=b, hours=s),
            )


async def _serve(args: argparse.Namespace, blob_dir: Path) -> None:
    """Build and fill the simulator, serve it and print its address until a stop signal."""
    sim = Simulator(
        token=args.token,
        blob_dir=blob_dir,
        part_size=args.part_size,
        url_lifetime=args.url_lifetime,
        per_page=args.per_page,
        account_id=args.account_id,
    )
    sim.connection_rate = args.connection_rate
    sim.latency = args.latency
    _populate_from_args(sim, args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with SimulatorServer(sim, args.host, args.port) as server:
        print(json.dumps({"base_url": server.base_url, "port": server.port}), flush=True)
        await stop.wait()

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
from archiver.simulator.cadence import cadence
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
    parser.add_argument(
        "--keep-count", type=int, default=None,
        help="each stack keeps only its N newest backups per series; older ones rotate away",
    )
    parser.add_argument(
        "--weekdays-only", action="store_true",
        help="date the stacks' backups daily up to now, skipping weekends (default: daily from "
        "2025-01-01)",
    )
    parser.add_argument(
        "--fail-newest", action="store_true",
        help="add a failed backup (status 1) newer than every other to the first stack",
    )
    parser.add_argument(
        "--shrink-newest", type=float, default=None, metavar="RATIO",
        help="add to the first stack a newest good backup of RATIO x --backup-size",
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
    _add_stacks(sim, args)
    first = "stack-1"
    if args.multipart_backup_size is not None:
        sim.add_backup(first, database_name="big_db", size=args.multipart_backup_size)
    if args.failed_backup:
        sim.add_backup(first, database_name="failed_db", size=1024, status=1)
    _add_watch_scenes(sim, args)


def _add_stacks(sim: Account, args: argparse.Namespace) -> None:
    """``stack-<s>`` with one backup a day (from 2025-01-01, or weekdays up to now), cycling
    through the db types."""
    count = args.backups_per_stack
    if args.weekdays_only:
        dates = cadence(_today(), count, timedelta(days=1), weekdays_only=True)[::-1]
    else:
        dates = [datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=b) for b in range(count)]
    for s in range(1, args.stacks + 1):
        uid = f"stack-{s}"
        sim.add_stack(uid, f"Stack {s}")
        for b, date in enumerate(dates):
            sim.add_backup(
                uid,
                db_type=DB_TYPES[b % len(DB_TYPES)],
                database_name=f"db_{s}",
                size=args.backup_size,
                backup_date=date + timedelta(hours=s),
            )


def _add_watch_scenes(sim: Account, args: argparse.Namespace) -> None:
    """What the watch finds: a shrunken newest dump, a failed newest backup, rotation."""
    first = "stack-1"
    if args.shrink_newest is not None:
        size = max(1, round(args.shrink_newest * args.backup_size))
        sim.add_backup(first, database_name="db_1", size=size, db_type=DB_TYPES[0])
    if args.fail_newest:
        sim.add_backup(first, database_name="db_1", size=1024, status=1, db_type=DB_TYPES[0])
    if args.keep_count is not None:
        for uid in sim.stack_uids():
            sim.set_keep_count(uid, args.keep_count)


def _today() -> datetime:
    """Today at 02:00 UTC (or yesterday's, before 02:00): when nightly backups run."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    night = now.replace(hour=2)
    return night if night <= now else night - timedelta(days=1)


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

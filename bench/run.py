"""Benchmark c66-archiver: throughput against curl, peak RSS, CPU per GiB, bytes written,
the 1 GiB backup into local storage, S3 (SeaweedFS) and SFTP (sshd) side by side, and the
API requests of a steady-state pass over many stacks.

Prints a Markdown report on stdout (progress goes to stderr) and writes the whole
record as JSON under bench/results/. Full run: 2 GiB per round, several minutes;
``--quick`` checks that everything works in well under a minute.

Examples:
    .venv/bin/python bench/run.py --quick
    .venv/bin/python bench/run.py --only offsite
    .venv/bin/python bench/run.py --rounds 5 > bench/results/latest.md
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import common
import render_md
import report
from common import REPO_ROOT, load_average, progress
from offsite import OffsiteResult, run_offsite
from steady import SteadyResult, run_steady
from throughput import FULL, QUICK, ThroughputResult, run_throughput
from transfer import TransferResult, run_transfer

RESULTS_DIR = REPO_ROOT / "bench" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help="1/8 of the data (128 MiB + 4 x 32 MiB), 50 stacks, 1 round")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds of each tool, median reported (default 3; --quick: 1)")
    parser.add_argument("--stacks", type=int, default=None,
                        help="stacks of the steady-state pass (default 500; --quick: 50)")
    parser.add_argument("--only", choices=("throughput", "transfer", "offsite", "steady"),
                        default=None,
                        help="run one part only")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="scratch space on the disk to measure (default: a new folder "
                        "under /var/tmp); a folder made inside it is removed at the end")
    parser.add_argument("--keep-workdir", action="store_true", help="do not remove the scratch")
    parser.add_argument("--no-verify-etag", action="store_true",
                        help="archive with transfer.verify_etag = false (no MD5 per byte)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="transfer part: also run the archiver of this source tree (e.g. "
                        "`git archive BASE | tar -x -C DIR`), in the same rounds")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help=f"where the JSON record goes (default {RESULTS_DIR})")
    args = parser.parse_args(argv)
    if args.no_verify_etag:
        common.TRANSFER_EXTRA.append("verify_etag = false")
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.stacks = args.stacks or (50 if args.quick else 500)
    if args.rounds < 1 or args.stacks < 1:
        parser.error("--rounds and --stacks must be at least 1")
    return args


def make_workdir(parent: Path | None) -> Path:
    """A new scratch folder (under /var/tmp by default: the same disk as the repo here)."""
    base = parent or Path("/var/tmp")
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="c66-bench-", dir=base))


Results = tuple[
    ThroughputResult | None, TransferResult | None, OffsiteResult | None, SteadyResult | None
]


def run_parts(args: argparse.Namespace, workdir: Path) -> Results:
    """Run the parts asked for, the big transfers first (they need the machine quiet)."""
    throughput = transfer = offsite = steady = None
    sizes = QUICK if args.quick else FULL
    if args.only in (None, "throughput"):
        throughput = run_throughput(workdir, sizes, args.rounds)
    if args.only in (None, "transfer"):
        transfer = run_transfer(workdir, sizes.big, args.rounds, args.baseline)
    if args.only in (None, "offsite"):
        offsite = run_offsite(workdir, sizes, args.rounds)
    if args.only in (None, "steady"):
        steady = asyncio.run(run_steady(workdir, args.stacks))
    return throughput, transfer, offsite, steady


def main(argv: list[str] | None = None) -> int:
    """Run, print the Markdown report, save the JSON record."""
    args = parse_args(argv)
    command = shlex.join(["python", "bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    workdir = make_workdir(args.workdir)
    progress(f"workdir {workdir}")
    try:
        env = report.environment(workdir)
        throughput, transfer, offsite, steady = run_parts(args, workdir)
    finally:
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    env["load_average_end"] = load_average()
    figures = report.summary(throughput, steady, offsite, transfer)
    title = "c66-archiver benchmark" + (" (quick)" if args.quick else "")
    print(render_md.render(title, env, command, figures, throughput, steady, offsite, transfer))
    record: dict[str, Any] = {
        "command": command, "options": vars(args), "environment": env, "summary": figures,
        "throughput": throughput, "transfer": transfer, "offsite": offsite, "steady": steady,
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.results_dir / f"{stamp}{'-quick' if args.quick else ''}.json"
    report.write_json(path, record)
    progress(f"JSON record: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

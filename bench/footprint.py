"""Peak RSS of one-shot passes: a tiny backup (the base) and a 256 MiB one (what a big
download adds), plus where the base goes (the import cost of each top-level package).

    .venv/bin/python bench/footprint.py [--rounds 5] [--big-mib 256] [--importtime]

Each pass is `c66-archiver --config CFG sync` into a fresh local archive, from a
simulator process serving one backup, measured by `measure_io.py` (ru_maxrss of that
process alone). The archiver is the console script beside this interpreter: run it from
a venv installed as users get it (`requirements.lock`, then the wheel) for the figures
the README gives. `--importtime` adds the `-X importtime` self time of each top-level
package of one tiny pass. Markdown on stdout.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from common import MIB, archiver_command, child_env, fresh_dir, run_archiver_sync, write_config
from throughput import serve_simulator

TINY = 64 * 1024
STACK = "stack-1"  # how the simulator's CLI names its first stack


def _simulator_options(size: int) -> list[str]:
    return ["--stacks", "1", "--backups-per-stack", "1", "--backup-size", str(size),
            "--part-size", str(1 << 30)]  # fmt: skip


def peak_rss(work: Path, size: int, rounds: int) -> list[float]:
    """Peak RSS (MiB) of `rounds` passes archiving one backup of `size` bytes."""
    peaks = []
    with serve_simulator(work / "blobs", work / "simulator.log", *_simulator_options(size)) as (
        base_url,
        _,
    ):
        for _ in range(rounds):
            folder = fresh_dir(work / "run")
            config = write_config(folder, base_url, [STACK])
            measured = run_archiver_sync(folder, config)
            if measured.returncode != 0:
                raise RuntimeError(f"sync exited {measured.returncode}: {folder / 'archiver.log'}")
            peaks.append(measured.max_rss_bytes / MIB)
    return peaks


def import_costs(work: Path) -> Counter[str]:
    """Microseconds of import (self time) per top-level package, in one tiny pass."""
    costs: Counter[str] = Counter()
    with serve_simulator(work / "blobs", work / "simulator.log", *_simulator_options(TINY)) as (
        base_url,
        _,
    ):
        folder = fresh_dir(work / "run")
        config = write_config(folder, base_url, [STACK])
        command = archiver_command()
        if not command[0].endswith("python"):
            command = [str(Path(sys.executable)), "-X", "importtime", *command]
        done = subprocess.run(
            [*command, "--config", str(config), "sync"], env=child_env(),
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if match:
            costs[match[2].split(".")[0]] += int(match[1])
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--big-mib", type=int, default=256)
    parser.add_argument("--importtime", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as folder:
        work = Path(folder)
        tiny = peak_rss(fresh_dir(work / "tiny"), TINY, args.rounds)
        big = peak_rss(fresh_dir(work / "big"), args.big_mib * MIB, args.rounds)
        costs = import_costs(fresh_dir(work / "imports")) if args.importtime else Counter()
    base, loaded = statistics.median(tiny), statistics.median(big)
    print(f"| one-shot pass ({args.rounds} rounds, median) | peak RSS (MiB) |")
    print("| --- | --- |")
    print(f"| 64 KiB backup (the base) | {base:.1f} (min {min(tiny):.1f}, max {max(tiny):.1f}) |")
    print(f"| {args.big_mib} MiB backup | {loaded:.1f} (min {min(big):.1f}, max {max(big):.1f}) |")
    print(f"| added by the big download | {loaded - base:.1f} |")
    if costs:
        print("\n| package | import self time (ms) |\n| --- | --- |")
        for name, micros in costs.most_common(15):
            print(f"| {name} | {micros / 1000:.0f} |")


if __name__ == "__main__":
    main()

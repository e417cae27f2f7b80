"""What the watch costs a pass: judging every stack's list against a real state.

Each stack lists 100 good hourly backups of one series; the first round records
them all (seen rows, series facts), the next rounds are steady passes (nothing
new) and a pass after a rotation (each stack's five oldest gone, so five missed
each). Wall time includes the state's durable commits (WAL, synchronous=FULL);
CPU is this process's. Markdown table on stdout.

    .venv/bin/python bench/watch_bench.py               # 500 stacks, 3 steady rounds
    .venv/bin/python bench/watch_bench.py --stacks 100
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from archiver.state.findings import Outbox
from archiver.state.store import StateStore
from archiver.watch.judge import judge_stack
from archiver.watch.reading import Listed, StackReading, Thresholds

BACKUPS = 100
NOW = datetime.now(UTC).replace(microsecond=0)


def _readings(stacks: int, rotated: int = 0) -> list[StackReading]:
    readings = []
    for s in range(stacks):
        backups = tuple(
            Listed(s * 1000 + n, "mysql", "db", NOW - timedelta(hours=n), True)
            for n in range(BACKUPS - rotated)
        )
        readings.append(StackReading(f"stack-{s}", "", None, backups, True))
    return readings


def _round(state: StateStore, readings: list[StackReading]) -> tuple[float, float, int]:
    """Judge every stack once: (wall seconds, CPU seconds, new findings)."""
    wall, cpu = time.perf_counter(), time.process_time()
    found = 0
    for reading in readings:
        found += len(judge_stack(
            state, reading, Thresholds(None, 0.5), archived=[],
            outbox=Outbox(state.database), now=NOW,
        ))  # fmt: skip
    return time.perf_counter() - wall, time.process_time() - cpu, found


def main() -> None:
    """Run the rounds and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3, help="steady rounds")
    args = parser.parse_args()
    heading = f"pass ({args.stacks} stacks x {BACKUPS} backups)"
    print(f"| {heading} | wall s | CPU s | ms/stack | new findings |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="c66-watch-bench-") as folder:
        state = StateStore.open(Path(folder) / "state")
        try:
            rounds = [("first (records everything)", _readings(args.stacks))]
            rounds += [(f"steady {n + 1}", _readings(args.stacks)) for n in range(args.rounds)]
            rounds.append(("after a rotation (5 missed a stack)", _readings(args.stacks, 5)))
            for label, readings in rounds:
                wall, cpu, found = _round(state, readings)
                per_stack = 1000 * wall / args.stacks
                print(f"| {label} | {wall:.2f} | {cpu:.2f} | {per_stack:.2f} | {found} |")
        finally:
            state.close()


if __name__ == "__main__":
    main()

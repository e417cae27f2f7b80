"""Shared by the one-backup benchmarks (verify, encryption): rows, medians, table, CLI."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any

from common import GIB, MIB
from measure_io import Measured

FIGURES = ("wall_s", "mb_s", "cpu_s", "rss_mib")


def row(name: str, measured: Measured, size: int) -> dict[str, Any]:
    """One measured run of `name` over `size` bytes."""
    return {
        "name": name,
        "wall_s": measured.wall_seconds,
        "mb_s": size / 1e6 / measured.wall_seconds,
        "cpu_s": measured.cpu_seconds,
        "rss_mib": measured.max_rss_bytes / MIB,
    }


def medians(rows: list[dict[str, Any]], names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per name, the median of each figure."""
    return {
        name: {key: statistics.median(r[key] for r in rows if r["name"] == name) for key in FIGURES}
        for name in names
    }


def table(title: str, column: str, result: dict[str, Any]) -> list[str]:
    """The Markdown table of `result["medians"]`, under `title`."""
    lines = [
        f"{title} (median of {result['rounds']} rounds each)",
        "",
        f"| {column} | wall s | MB/s | CPU s | peak RSS MiB |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, figures in result["medians"].items():
        lines.append(
            f"| {name} | {figures['wall_s']:.2f} | {figures['mb_s']:.0f} | "
            f"{figures['cpu_s']:.2f} | {figures['rss_mib']:.0f} |"
        )
    return lines


def one_backup_main(
    prog: str,
    description: str | None,
    run: Callable[[int, int], dict[str, Any]],
    render: Callable[[dict[str, Any]], str],
    argv: list[str] | None,
) -> int:
    """1 GiB and 4 rounds (or --quick: 128 MiB, 2); the table on stdout, JSON on stderr."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--quick", action="store_true", help="128 MiB, 2 rounds each")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    size = 128 * MIB if args.quick else GIB
    result = run(size, args.rounds or (2 if args.quick else 4))
    print(render(result))
    print(json.dumps(result), file=sys.stderr)
    return 0

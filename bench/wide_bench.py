"""Wide transfers (issue 17): one backup over 1, 2, 4 and 8 streams on a link that caps
each connection, its parts side by side, and the default on plain loopback.

Three simulator processes (``python -m archiver.simulator``) serve the same size of
backup from blob files written before any timing:

- *link, 1 part* and *link, 4 parts*: every blob body paced to ``--rate`` bytes/s
  (25 MB/s: what one connection to a far-away S3 often gets) with ``--latency``
  seconds before each answer (20 ms), the same backup as one file and as 4 parts;
- *loopback*: the single part, unpaced.

Each round runs every variant once, in an order rotated each round, as
``c66-archiver sync`` into a fresh local archive and state (measured by
``measure_io.py``: wall time, CPU user + sys, peak RSS of that process alone), and
each archive's tar and manifest are read back and checked against the simulator's
sha256 (not timed). ``--baseline DIR`` adds the archiver of another source tree
(``git archive``: the one before wide transfers, one stream per file) on loopback
in the same rounds. Medians per variant; the targets:

- on the link, 4 streams >= 3.5x the throughput of 1 stream;
- on the link, the 4-part backup within 10% of the one file (4 streams each);
- on loopback, the defaults (4 streams) no slower than the baseline's single stream
  (within 5%), with CPU seconds per GiB reported;
- peak RSS with the defaults under 100 MiB.

    .venv/bin/python bench/wide_bench.py --baseline /var/tmp/c66-base   # 1 GiB, 3 rounds
    .venv/bin/python bench/wide_bench.py --quick                         # 128 MiB, 1 round
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import GIB, MIB, REPO_ROOT, fresh_dir, log_tail, progress, run_archiver_sync
from common import write_config as common_config
from measure_io import Measured
from offsite import expected_sha256, verify_folder
from throughput import serve_simulator
from transfer import compile_sources

STACK = "stack-1"
TARGET_FOUR_STREAMS = 3.5
TARGET_PARTS_SLOWDOWN = 1.10
TARGET_LOOPBACK_RATIO = 0.95
TARGET_RSS_MIB = 100.0


@dataclass(frozen=True)
class Variant:
    """One archiver run: which server, which `[transfer]` lines, which source tree."""

    name: str
    server: str  # "link-1", "link-4" or "loopback"
    transfer: tuple[str, ...] = ()
    baseline: bool = False


def variants(with_baseline: bool) -> list[Variant]:
    """The link's stream counts and parts, then loopback's defaults (and the baseline)."""
    link = [
        Variant(f"link, 1 file, {n} stream{'s' if n > 1 else ''}", "link-1",
                (f"streams_per_file = {n}",))
        for n in (1, 2, 4, 8)
    ]
    link.append(Variant("link, 4 parts, 4 streams", "link-4", ("streams_per_file = 4",)))
    loopback = [
        Variant("loopback, defaults (4 streams)", "loopback"),
        Variant("loopback, 1 stream", "loopback", ("streams_per_file = 1",)),
    ]
    if with_baseline:
        loopback.append(Variant("loopback, before (baseline)", "loopback", baseline=True))
    return link + loopback


def _serve(stack: ExitStack, root: Path, name: str, size: int, parts: int,
           pace: list[str]) -> str:
    part_size = size + 1 if parts == 1 else -(-size // parts)
    base_url, _ = stack.enter_context(serve_simulator(
        root / f"blobs-{name}", root / f"simulator-{name}.log",
        "--stacks", "1", "--backups-per-stack", "1", "--backup-size", str(size),
        "--part-size", str(part_size), *pace,
    ))
    return str(base_url)


def _run(variant: Variant, folder: Path, base_url: str, baseline: Path | None) -> Measured:
    config = common_config(folder, base_url, [STACK], transfer=variant.transfer)
    os.sync()  # earlier dirty pages are not this run's to flush
    return run_archiver_sync(folder, config, baseline if variant.baseline else None)


def _row(variant: Variant, measured: Measured, size: int, round_index: int) -> dict[str, Any]:
    return {
        "name": variant.name,
        "round": round_index,
        "wall_s": measured.wall_seconds,
        "mb_s": size / 1e6 / measured.wall_seconds,
        "cpu_s_per_gib": measured.cpu_seconds / (size / GIB),
        "rss_mib": measured.max_rss_bytes / MIB,
    }


def run(size: int, rounds: int, rate: int, latency: float, baseline: Path | None,
        only: str | None = None) -> dict[str, Any]:
    """Serve the three data sets, run every variant each round (rotated), check each archive."""
    compile_sources([REPO_ROOT] + ([baseline] if baseline else []))
    root = Path(tempfile.mkdtemp(prefix="c66-wide-bench-", dir="/var/tmp"))
    pace = ["--connection-rate", str(rate), "--latency", str(latency)]
    order = [v for v in variants(baseline is not None) if only is None or only in v.name]
    rows: list[dict[str, Any]] = []
    try:
        with ExitStack() as stack:
            progress(f"generating {size / 1e6:,.0f} MB three times ...")
            servers = {
                "link-1": _serve(stack, root, "link-1", size, 1, pace),
                "link-4": _serve(stack, root, "link-4", size, 4, pace),
                "loopback": _serve(stack, root, "loopback", size, 1, []),
            }
            expected = expected_sha256(root / "blobs-loopback")
            for name in ("link-1", "link-4"):
                if expected_sha256(root / f"blobs-{name}") != expected:
                    raise RuntimeError(f"the {name} backup differs from the loopback one")
            for index in range(rounds):
                shift = index % len(order)
                for variant in order[shift:] + order[:shift]:
                    rows.append(_one(variant, root, servers, size, expected, baseline, index + 1))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"size": size, "rounds": rounds, "rate": rate, "latency": latency,
            "medians": _medians(rows, order), "rows": rows}


def _one(variant: Variant, root: Path, servers: dict[str, str], size: int, expected: str,
         baseline: Path | None, index: int) -> dict[str, Any]:
    folder = fresh_dir(root / "run")
    measured = _run(variant, folder, servers[variant.server], baseline)
    if measured.returncode != 0:
        raise RuntimeError(f"{variant.name}: exit {measured.returncode}\n{log_tail(folder)}")
    verified = verify_folder(folder / "archive")
    if (verified.size, verified.sha256, verified.manifest_sha256) != (size, expected, expected):
        raise RuntimeError(f"{variant.name}: archived {verified}, expected sha256 {expected}")
    row = _row(variant, measured, size, index)
    progress(f"round {index} {variant.name:34} {row['wall_s']:7.2f} s {row['mb_s']:7.1f} MB/s "
             f"cpu {row['cpu_s_per_gib']:5.2f} s/GiB rss {row['rss_mib']:5.1f} MiB "
             f"load {os.getloadavg()[0]:.2f}")
    shutil.rmtree(folder, ignore_errors=True)
    return row


def _medians(rows: list[dict[str, Any]], order: list[Variant]) -> dict[str, dict[str, float]]:
    keys = ("wall_s", "mb_s", "cpu_s_per_gib", "rss_mib")
    return {
        variant.name: {
            key: statistics.median(r[key] for r in rows if r["name"] == variant.name)
            for key in keys
        } | {"rss_max_mib": max(r["rss_mib"] for r in rows if r["name"] == variant.name)}
        for variant in order
    }


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def targets(result: dict[str, Any]) -> list[str]:
    """The issue's targets, each with its figures and whether it was met."""
    m = result["medians"]
    one, four = m["link, 1 file, 1 stream"], m["link, 1 file, 4 streams"]
    parts = m["link, 4 parts, 4 streams"]
    defaults = m["loopback, defaults (4 streams)"]
    speedup = four["mb_s"] / one["mb_s"]
    slowdown = parts["wall_s"] / four["wall_s"]
    lines = [
        f"- link: 4 streams = **{speedup:.2f}x** 1 stream (target >= {TARGET_FOUR_STREAMS}x: "
        f"{_met(speedup >= TARGET_FOUR_STREAMS)})",
        f"- link: 4 parts = **{slowdown:.2f}x** the wall time of 1 file, 4 streams each "
        f"(target <= {TARGET_PARTS_SLOWDOWN}x: {_met(slowdown <= TARGET_PARTS_SLOWDOWN)})",
    ]
    reference = m.get("loopback, before (baseline)")
    if reference is not None:
        ratio = defaults["mb_s"] / reference["mb_s"]
        lines.append(
            f"- loopback: defaults = **{ratio:.2f}x** the single stream before "
            f"(target >= {TARGET_LOOPBACK_RATIO}x: {_met(ratio >= TARGET_LOOPBACK_RATIO)}); "
            f"CPU {defaults['cpu_s_per_gib']:.2f} vs {reference['cpu_s_per_gib']:.2f} s/GiB"
        )
    rss = defaults["rss_max_mib"]
    lines.append(f"- peak RSS with the defaults: **{rss:.1f} MiB** (target < {TARGET_RSS_MIB:.0f}: "
                 f"{_met(rss < TARGET_RSS_MIB)}; highest of its rounds)")
    return lines


def render(result: dict[str, Any]) -> str:
    """The Markdown table of medians, then the targets (when every variant ran)."""
    size, rate = result["size"], result["rate"]
    lines = [
        f"`sync` of one {size / GIB:.2f} GiB backup, median of {result['rounds']} round(s), "
        f"order rotated each round; link = {rate / 1e6:.0f} MB/s per connection and "
        f"{result['latency'] * 1000:.0f} ms before each answer",
        "",
        "| variant | wall s | MB/s | CPU s/GiB | peak RSS MiB |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, figures in result["medians"].items():
        lines.append(f"| {name} | {figures['wall_s']:.2f} | {figures['mb_s']:.1f} | "
                     f"{figures['cpu_s_per_gib']:.2f} | {figures['rss_mib']:.1f} |")
    complete = all(v.name in result["medians"] for v in variants(False))
    return "\n".join([*lines, "", *(targets(result) if complete else [])])


def main(argv: list[str] | None = None) -> int:
    """Run and print the report; the JSON record goes to stderr's last line."""
    parser = argparse.ArgumentParser(prog="bench/wide_bench.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="128 MiB, 1 round")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--size", type=int, default=None, help="bytes (default 1 GiB)")
    parser.add_argument("--rate", type=int, default=25_000_000, help="bytes/s per connection")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per answer")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a source tree of the archiver before wide transfers")
    parser.add_argument("--only", default=None,
                        help="run only the variants whose name holds this text (no targets)")
    args = parser.parse_args(argv)
    size = args.size or (128 * MIB if args.quick else GIB)
    result = run(size, args.rounds or (1 if args.quick else 3), args.rate, args.latency,
                 args.baseline, args.only)
    print(render(result))
    print(json.dumps(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The environment header, the Markdown report and the JSON record of a benchmark run."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import offsite
import transfer
from common import GIB, MIB, REPO_ROOT, REQUESTS_PER_HOUR, load_average
from steady import SteadyResult
from throughput import Round, ThroughputResult

import archiver

NOTES = [
    "MB = 10^6 bytes, MiB = 2^20. Wall times are whole processes: the archiver's includes "
    "Python start-up, config, state creation and its API calls; curl's excludes fetching "
    "the URLs (done through the API just before).",
    "Page cache is not dropped (not reliably possible here): the simulator's blob files "
    "are read from memory, as they were just generated, and output is deleted between "
    "rounds. Both tools fsync their files (`sync F` for curl) and `sync` runs before "
    "each timed run, so earlier dirty pages are not flushed on its clock.",
    "Bytes written = `write_bytes` of /proc/<pid>/io, read once the process has exited "
    "(zombie, before reaping: the final value, summed over threads), so page-cache lag "
    "does not hide writes; it counts bytes dirtied, charged when dirtied; rusage "
    "`ru_oublock` gives the same figure as a cross-check. It includes the state database "
    "and manifests. Peak RSS and CPU come from `wait4()` of that one process.",
    f"`api.requests_per_hour = {REQUESTS_PER_HOUR}` so the client-side budget never "
    "paces a pass; `transfer.max_concurrent_downloads = 4`; curl runs 4 at a time too.",
    "Others' CPU = CPU seconds used during a round by processes outside the benchmark "
    "(machine-wide busy time from /proc/stat minus the tool, the simulator and the "
    "benchmark itself). It also holds kernel time charged to no process (softirq of the "
    "loopback TCP, writeback), so it is never quite 0; seconds of it mean other work shared "
    "the 2 cores, which slows the CPU-bound archiver far more than curl.",
    "The simulator of the throughput part is a separate process on the same 2 cores; "
    "in the steady-state part it runs inside the benchmark process.",
]


def _command(*argv: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else "?"


def _mem_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def environment(workdir: Path) -> dict[str, Any]:
    """Where the figures come from: machine, versions, disk."""
    dirty = _command("git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "archiver")
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _command("git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD")
        + (" (archiver/ modified)" if dirty not in ("?", "") else ""),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(_mem_total() / GIB, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "archiver": archiver.__version__,
        "aiohttp": aiohttp.__version__,
        "curl": " ".join(_command("curl", "--version").split()[:2]),
        "workdir": str(workdir),
        "filesystem": _command("findmnt", "-no", "SOURCE,FSTYPE", "--target", str(workdir)),
        "same_disk_as_repo": os.stat(workdir).st_dev == os.stat(REPO_ROOT).st_dev,
        "disk_free_gib": round(shutil.disk_usage(workdir).free / GIB, 1),
        "load_average_start": load_average(),
    }


def summary(
    throughput: ThroughputResult | None,
    steady: SteadyResult | None,
    offsite_result: offsite.OffsiteResult | None = None,
    transfer_result: transfer.TransferResult | None = None,
) -> dict[str, Any]:
    """The headline figures, as numbers."""
    figures: dict[str, Any] = {}
    if throughput is not None:
        figures.update(_throughput_summary(throughput))
    if transfer_result is not None:
        figures["transfer"] = transfer.summary(transfer_result)
    if offsite_result is not None:
        figures["offsite"] = offsite.summary(offsite_result)
    if steady is not None:
        figures["steady_requests"] = steady.steady.api_requests
        figures["steady_stack_pages"] = steady.stack_pages
        figures["steady_requests_per_stack_page"] = steady.requests_per_stack_page
        figures["steady_wall_seconds"] = steady.steady.wall_seconds
        figures["steady_downloads"] = steady.steady.downloads_started
    return figures


def _ratio(round_: Round) -> float | None:
    return None if round_.write_bytes is None else round_.write_bytes / round_.bytes


def _tool_summary(rounds: list[Round]) -> dict[str, float | None]:
    ratios = [r for r in map(_ratio, rounds) if r is not None]
    return {
        "wall_seconds": statistics.median(r.wall_seconds for r in rounds),
        "mb_per_second": statistics.median(r.mb_per_second for r in rounds),
        "max_rss_mib": max(r.max_rss_bytes for r in rounds) / MIB,
        "cpu_seconds_per_gib": statistics.median(r.cpu_seconds / (r.bytes / GIB) for r in rounds),
        "written_per_byte_max": max(ratios) if ratios else None,
    }


def _throughput_summary(result: ThroughputResult) -> dict[str, Any]:
    ours, curl = _tool_summary(result.of("c66-archiver")), _tool_summary(result.of("curl"))
    assert ours["mb_per_second"] is not None
    assert curl["mb_per_second"] is not None
    return {
        "archiver": ours,
        "curl": curl,
        "throughput_ratio": ours["mb_per_second"] / curl["mb_per_second"],
    }


def write_json(path: Path, record: dict[str, Any]) -> None:
    """The whole run (environment, options, every round, summary) as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=_jsonable) + "\n")


def _jsonable(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)

"""The transfer path: one 1 GiB backup, as 1 part and as 3 parts, against curl + fsync.

Two simulator processes serve the same size of backup, one as a single part and
one as 3 parts. Each round runs, in an order rotated every round:

- ``curl -o F URL && sync F`` of the single part (the reference: the bytes
  fetched and made durable, no hashing);
- ``c66-archiver sync`` of the single part, with the MD5 check (the default) and
  with ``verify_etag = false`` (sha256 only);
- the same for the 3-part backup (local storage joins the parts into one file);
- the single part once more with and without MD5 on aiohttp's public read path
  (``C66_ARCHIVER_PUBLIC_RECEIVE=1``: what ``archiver/receive.py`` falls back to when
  aiohttp is not the one it was tested on), reported beside the takeover.

Each archiver tree is byte-compiled first, as an install would be. Besides wall
time, CPU (user + sys, ``wait4``) and peak RSS of each process, every
round measures what the two hashes cost on their own here: sha256 and MD5 of 1 GiB
from memory in one thread (``thread_time``). The CPU budget of a variant is curl's
CPU + the hashes it must compute + 0.5 s per GiB (the issue's target). Each archived
tar is read back after its timed run and its size and sha256 checked against the
simulator's, so a faster but wrong transfer cannot pass.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    GIB,
    MIB,
    REPO_ROOT,
    busy_cpu_seconds,
    fresh_dir,
    log_tail,
    process_cpu_seconds,
    progress,
    run_archiver_sync,
    write_config,
)
from measure_io import Measured
from offsite import expected_sha256, verify_folder
from throughput import Sizes, bench_cpu_seconds, curl_one, fetch_part_urls, simulator_process

from archiver.transfer.receive import PUBLIC_RECEIVE_ENV

STACK = "stack-1"  # the simulator's CLI puts the --multipart-backup-size backup there
TARGET_MD5_RATIO = 0.7
TARGET_SHA256_RATIO = 0.9
TARGET_PARTS_SLOWDOWN = 1.1
TARGET_RSS_MIB = 100.0
CPU_ALLOWANCE_PER_GIB = 0.5
_HASH_BLOCK = 4 * MIB


@dataclass(frozen=True)
class Variant:
    """One way of fetching the backup: curl, or the archiver with some settings."""

    parts: int
    md5: bool
    tool: str = "c66-archiver"
    tree: Path | None = None  # another source tree of the archiver (the baseline)
    # Bodies read through aiohttp's public API: receive.py's fallback, timed beside the
    # takeover it stands in for (C66_ARCHIVER_PUBLIC_RECEIVE=1).
    public_receive: bool = False

    @property
    def name(self) -> str:
        """How the report calls it."""
        if self.tool == "curl":
            return "curl + sync"
        hashes = "sha256 + MD5" if self.md5 else "sha256 only"
        plural = "s" if self.parts > 1 else ""
        fallback = ", aiohttp's public read path" if self.public_receive else ""
        baseline = " (baseline)" if self.tree else ""
        return f"{self.parts} part{plural}, {hashes}{fallback}{baseline}"

    @property
    def transfer_lines(self) -> list[str]:
        """Extra ``[transfer]`` lines of its config."""
        return [] if self.md5 else ["verify_etag = false"]

    def single_part(self) -> Variant:
        """The same work on a single-part backup (what a multi-part one is held to)."""
        return dataclasses.replace(self, parts=1)

    def fast_path(self) -> Variant:
        """The same work with the body taken over (what the fallback is compared with)."""
        return dataclasses.replace(self, public_receive=False)

    @property
    def env(self) -> dict[str, str]:
        """Extra environment of its archiver process."""
        return {PUBLIC_RECEIVE_ENV: "1"} if self.public_receive else {}


CURL = Variant(parts=1, md5=False, tool="curl")


def variants(baseline: Path | None) -> tuple[Variant, ...]:
    """curl, then the archiver with and without MD5 on 1 and 3 parts (and the baseline's)."""
    trees = [None] if baseline is None else [None, baseline]
    return (CURL, *(Variant(parts, md5, tree=tree)
                    for tree in trees for parts in (1, 3) for md5 in (True, False)),
            *(Variant(1, md5, public_receive=True) for md5 in (True, False)))


@dataclass(frozen=True)
class TransferRound:
    """One measured process (or curl + sync) over the whole backup."""

    variant: str
    index: int
    wall_seconds: float
    cpu_seconds: float
    max_rss_bytes: int
    foreign_cpu_seconds: float
    bytes: int


@dataclass(frozen=True)
class HashCost:
    """CPU seconds one thread needs to hash 1 GiB from memory, measured in a round."""

    sha256: float
    md5: float


@dataclass
class TransferResult:
    """Every round, in the order it ran, and the hash costs measured along the way."""

    size: int
    expected_sha256: str
    variants: tuple[Variant, ...]
    rounds: list[TransferRound] = field(default_factory=list)
    hash_costs: list[HashCost] = field(default_factory=list)

    def of(self, variant: str) -> list[TransferRound]:
        """The rounds of one variant."""
        return [r for r in self.rounds if r.variant == variant]


@dataclass(frozen=True)
class _Server:
    base_url: str
    pid: int


# ------------------------------------------------------------------ measuring


def hash_cost(size: int) -> HashCost:
    """CPU (this thread) to sha256 and to MD5 ``size`` bytes from a 4 MiB buffer, per GiB."""
    block = os.urandom(_HASH_BLOCK)
    costs = []
    for digest in (hashlib.sha256(), hashlib.md5(usedforsecurity=False)):
        began = time.thread_time()
        for _ in range(size // _HASH_BLOCK):
            digest.update(block)
        costs.append((time.thread_time() - began) / (size / GIB))
    return HashCost(sha256=costs[0], md5=costs[1])


def _archiver(variant: Variant, folder: Path, server: _Server) -> Measured:
    config = write_config(folder, server.base_url, [STACK], transfer=variant.transfer_lines)
    os.sync()  # flush earlier dirty pages now, not during the timed run
    return run_archiver_sync(folder, config, variant.tree, env=variant.env)


def _curl(folder: Path, server: _Server) -> Measured:
    urls = asyncio.run(fetch_part_urls(server.base_url, [STACK]))  # not timed
    if len(urls) != 1:
        raise RuntimeError(f"the curl baseline expects one part, the simulator lists {urls}")
    os.sync()
    return curl_one(folder, "backup.tar", urls[0][1])


def _run(variant: Variant, folder: Path, server: _Server) -> Measured:
    return _curl(folder, server) if variant is CURL else _archiver(variant, folder, server)


def _check(variant: Variant, folder: Path, measured: Measured, result: TransferResult) -> None:
    """The process succeeded and the bytes it stored are the backup's."""
    if measured.returncode != 0:
        raise RuntimeError(f"{variant.name}: exit {measured.returncode}\n{log_tail(folder)}")
    if variant is CURL:
        size = (folder / "backup.tar").stat().st_size
        if size != result.size:
            raise RuntimeError(f"curl fetched {size} bytes, expected {result.size}")
        return
    verified = verify_folder(folder / "archive")
    if (verified.size, verified.sha256, verified.manifest_sha256) != (
        result.size, result.expected_sha256, result.expected_sha256
    ):
        raise RuntimeError(f"{variant.name}: archived {verified}, expected {result.size} bytes "
                           f"with sha256 {result.expected_sha256}")


def one_round(
    variant: Variant, workdir: Path, server: _Server, index: int, result: TransferResult
) -> TransferRound:
    """Run one variant once, measured, with the CPU others used meanwhile; check and clean."""
    folder = fresh_dir(workdir / "out")
    try:
        before = busy_cpu_seconds(), bench_cpu_seconds(), process_cpu_seconds(server.pid)
        measured = _run(variant, folder, server)
        after = busy_cpu_seconds(), bench_cpu_seconds(), process_cpu_seconds(server.pid)
        _check(variant, folder, measured, result)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    busy, bench, simulator = (a - b for a, b in zip(after, before, strict=True))
    outcome = TransferRound(
        variant=variant.name, index=index, wall_seconds=measured.wall_seconds,
        cpu_seconds=measured.cpu_seconds, max_rss_bytes=measured.max_rss_bytes,
        foreign_cpu_seconds=max(0.0, busy - bench - simulator), bytes=result.size,
    )
    progress(
        f"round {index} {variant.name:22} {outcome.wall_seconds:6.2f} s  "
        f"cpu {outcome.cpu_seconds:5.2f} s  rss {outcome.max_rss_bytes / MIB:5.1f} MiB  "
        f"others' cpu {outcome.foreign_cpu_seconds:5.2f} s  load {os.getloadavg()[0]:.2f}"
    )
    return outcome


def _rotations(
    rounds: int, order: tuple[Variant, ...]
) -> Iterator[tuple[int, tuple[Variant, ...]]]:
    """Round numbers with the order of the variants: each goes first in turn."""
    for index in range(1, rounds + 1):
        shift = (index - 1) % len(order)
        yield index, order[shift:] + order[:shift]


def compile_sources(trees: list[Path]) -> None:
    """Byte-compile each tree's ``archiver`` once, as an install does: with
    PYTHONDONTWRITEBYTECODE set (as on our build machines) every run would otherwise
    compile the package from source again (about 50 ms of start-up)."""
    for tree in trees:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "archiver")],
                       check=True)


def run_transfer(
    workdir: Path, size: int, rounds: int, baseline: Path | None = None
) -> TransferResult:
    """Start both simulators (1 part, 3 parts), run the rounds, stop them.

    ``baseline``: a source tree of another commit whose archiver runs too, in the same
    rounds, so a before/after comparison shares the machine's conditions.
    """
    compile_sources([REPO_ROOT] + ([baseline] if baseline else []))
    root = workdir / "transfer"
    root.mkdir()
    progress(f"transfer: generating {size / 1e6:,.0f} MB twice (1 part, 3 parts) ...")
    with ExitStack() as stack:
        servers: dict[int, _Server] = {}
        for parts in (1, 3):
            sizes = Sizes(big=size, small=0, small_count=0, part_size=math.ceil(size / parts))
            base_url, pid = stack.enter_context(simulator_process(
                root / f"blobs-{parts}", sizes, root / f"simulator-{parts}.log"
            ))
            servers[parts] = _Server(base_url, pid)
        result = TransferResult(size, expected_sha256(root / "blobs-1"), variants(baseline))
        if expected_sha256(root / "blobs-3") != result.expected_sha256:
            raise RuntimeError("the 1-part and 3-part backups differ")
        for index, order in _rotations(rounds, result.variants):
            result.hash_costs.append(hash_cost(size))
            for variant in order:
                result.rounds.append(
                    one_round(variant, root, servers[variant.parts], index, result)
                )
    shutil.rmtree(root, ignore_errors=True)
    return result


# ------------------------------------------------------------------ report


def _median(values: Iterator[float]) -> float:
    return float(statistics.median(values))


def summary(result: TransferResult) -> dict[str, Any]:
    """Per variant: medians, peak RSS, ratio to curl, CPU budget and the targets."""
    sha256 = _median(c.sha256 for c in result.hash_costs)
    md5 = _median(c.md5 for c in result.hash_costs)
    gib = result.size / GIB
    figures: dict[str, Any] = {"hash_sha256_cpu_per_gib": sha256, "hash_md5_cpu_per_gib": md5}
    for variant in result.variants:
        rounds = result.of(variant.name)
        figures[variant.name] = {
            "rounds": len(rounds),
            "wall_seconds": _median(r.wall_seconds for r in rounds),
            "cpu_seconds_per_gib": _median(r.cpu_seconds / gib for r in rounds),
            "max_rss_mib": max(r.max_rss_bytes for r in rounds) / MIB,
        }
    curl = figures[CURL.name]
    for variant in result.variants[1:]:
        values = figures[variant.name]
        values["ratio_to_curl"] = curl["wall_seconds"] / values["wall_seconds"]
        values["cpu_budget_per_gib"] = (
            curl["cpu_seconds_per_gib"] + sha256 + (md5 if variant.md5 else 0.0)
            + CPU_ALLOWANCE_PER_GIB
        )
    return figures


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _met(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def _speed_target(variant: Variant, figures: dict[str, Any]) -> str:
    """The wall-time target of a variant, and whether it was met."""
    values = figures[variant.name]
    if variant.public_receive:
        fast = figures[variant.fast_path().name]["wall_seconds"]
        return f"fallback: {values['wall_seconds'] / fast:.2f}x the takeover's wall (no target)"
    if variant.parts > 1:
        single = figures[variant.single_part().name]["wall_seconds"]
        slowdown = values["wall_seconds"] / single
        return (f"{slowdown:.2f}x the 1-part wall (<= {TARGET_PARTS_SLOWDOWN}x): "
                f"{_met(slowdown <= TARGET_PARTS_SLOWDOWN)}")
    target = TARGET_MD5_RATIO if variant.md5 else TARGET_SHA256_RATIO
    return f">= {target}x: {_met(values['ratio_to_curl'] >= target)}"


def render(result: TransferResult, figures: dict[str, Any]) -> list[str]:
    """The Markdown section: one row per variant with its targets, then every round."""
    lines = [
        "## Transfer path",
        "",
        f"One {result.size / MIB:,.0f} MiB backup into local storage, as 1 part and as 3 "
        f"parts (two simulator processes), against `curl -o F URL && sync F` of the single "
        f"part; {len(result.hash_costs)} round(s), medians, order rotated each round. "
        f"Hashing 1 GiB in one thread here costs {figures['hash_sha256_cpu_per_gib']:.2f} s "
        f"(sha256) and {figures['hash_md5_cpu_per_gib']:.2f} s (MD5). CPU budget = curl's "
        f"CPU + the hashes the variant computes + {CPU_ALLOWANCE_PER_GIB} s per GiB.",
        "",
        _row("Variant", "Wall (s)", "vs curl", "Speed target", "CPU s/GiB",
             "CPU budget s/GiB", "Peak RSS (MiB)"),
        _row(*["---"] * 7),
    ]
    curl = figures[CURL.name]
    lines.append(_row(CURL.name, f"{curl['wall_seconds']:.2f}", "1.00x", "",
                      f"{curl['cpu_seconds_per_gib']:.2f}", "", f"{curl['max_rss_mib']:.1f}"))
    for variant in result.variants[1:]:
        values = figures[variant.name]
        budget = values["cpu_budget_per_gib"]
        rss = values["max_rss_mib"]
        lines.append(_row(
            variant.name, f"{values['wall_seconds']:.2f}", f"{values['ratio_to_curl']:.2f}x",
            _speed_target(variant, figures),
            f"{values['cpu_seconds_per_gib']:.2f}",
            f"{budget:.2f}: {_met(values['cpu_seconds_per_gib'] <= budget)}",
            f"{rss:.1f} (< {TARGET_RSS_MIB:.0f}: {_met(rss < TARGET_RSS_MIB)})",
        ))
    lines += [
        "",
        _row("Round", "Variant", "Wall (s)", "CPU (s)", "Peak RSS (MiB)", "Others' CPU (s)"),
        _row(*["---"] * 6),
    ]
    lines += [
        _row(r.index, r.variant, f"{r.wall_seconds:.2f}", f"{r.cpu_seconds:.2f}",
             f"{r.max_rss_bytes / MIB:.1f}", f"{r.foreign_cpu_seconds:.2f}")
        for r in result.rounds
    ]
    return lines

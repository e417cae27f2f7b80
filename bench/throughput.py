"""Throughput, peak RSS, CPU per GiB and bytes written: c66-archiver against curl + sync.

The simulator runs as a separate process (``python -m archiver.simulator``) so its
CPU is not ours and not the archiver's; its blob files are generated once, before
any timing. Each round archives everything into a fresh folder, then deletes it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from common import (
    CONCURRENCY,
    REPO_ROOT,
    TOKEN,
    busy_cpu_seconds,
    child_env,
    fresh_dir,
    log_tail,
    process_cpu_seconds,
    progress,
    run_archiver_sync,
    tar_bytes,
    write_config,
)
from measure_io import Measured, run_measured

STACKS = [f"stack-{n}" for n in (1, 2, 3, 4)]  # how the simulator's CLI names them
# curl writes the file, then sync(1) fsyncs it: the same durability as the archiver.
_CURL_SCRIPT = 'curl -sS -f -o "$1" "$2" && sync "$1"'


@dataclass(frozen=True)
class Sizes:
    """The data set: one big multi-part backup and some smaller single-part ones."""

    big: int
    small: int
    small_count: int
    part_size: int

    @property
    def total(self) -> int:
        """Bytes in the whole data set."""
        return self.big + self.small * self.small_count

    @property
    def big_parts(self) -> int:
        """How many parts the big backup comes in."""
        return math.ceil(self.big / self.part_size)


FULL = Sizes(big=1 << 30, small=256 << 20, small_count=4, part_size=350_000_000)
# Quick: everything / 8, the part size too, so the big backup stays 4 parts.
QUICK = Sizes(big=128 << 20, small=32 << 20, small_count=4, part_size=43_750_000)


@dataclass(frozen=True)
class Round:
    """One timed run of one tool over the whole data set."""

    tool: str  # "c66-archiver" or "curl"
    index: int
    wall_seconds: float
    bytes: int
    cpu_seconds: float
    max_rss_bytes: int
    write_bytes: int | None
    oublock_bytes: int
    foreign_cpu_seconds: float = 0.0  # CPU used meanwhile by processes not in the benchmark

    @property
    def mb_per_second(self) -> float:
        """Throughput in MB/s (10^6 bytes)."""
        return self.bytes / self.wall_seconds / 1e6


@dataclass
class ThroughputResult:
    """Every round of both tools, in the order they ran."""

    sizes: Sizes
    generate_seconds: float
    rounds: list[Round] = field(default_factory=list)

    def of(self, tool: str) -> list[Round]:
        """The rounds of one tool."""
        return [r for r in self.rounds if r.tool == tool]


# ------------------------------------------------------------------ simulator process


@contextmanager
def simulator_process(blob_dir: Path, sizes: Sizes, log: Path) -> Iterator[tuple[str, int]]:
    """Start ``python -m archiver.simulator`` with the data set; yield its base URL and pid."""
    with serve_simulator(
        blob_dir, log,
        "--stacks", str(sizes.small_count), "--backups-per-stack", "1",
        "--backup-size", str(sizes.small), "--part-size", str(sizes.part_size),
        "--multipart-backup-size", str(sizes.big),
    ) as served:
        yield served


@contextmanager
def serve_one_backup(blob_dir: Path, size: int, log: Path) -> Iterator[str]:
    """One stack, one backup of ``size`` bytes as a single part; yields the base URL."""
    with serve_simulator(
        blob_dir, log, "--stacks", "1", "--backups-per-stack", "1",
        "--backup-size", str(size), "--part-size", str(size + 1),
    ) as (base_url, _):
        yield base_url


def whole_file_sha256(path: Path) -> str:
    """The sha256 of a file, read in 4 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def serve_simulator(blob_dir: Path, log: Path, *options: str) -> Iterator[tuple[str, int]]:
    """``python -m archiver.simulator`` with these options (its account), once every blob
    file is written; yield its base URL and pid, stop it on exit."""
    argv = [
        sys.executable, "-m", "archiver.simulator", "--blob-dir", str(blob_dir),
        "--token", TOKEN, "--url-lifetime", "3600", *options,
    ]
    with log.open("wb") as errors:
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=errors, cwd=REPO_ROOT, env=child_env()
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once every blob file is written
        if not line:
            raise RuntimeError(f"the simulator did not start: {log.read_text()[-2000:]}")
        yield str(json.loads(line)["base_url"]), process.pid
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ------------------------------------------------------------------ c66-archiver


def archiver_round(folder: Path, base_url: str, index: int, expected: int) -> Round:
    """Archive the data set into an empty folder with ``c66-archiver sync``; then delete it."""
    fresh_dir(folder)
    config = write_config(folder, base_url, STACKS)
    os.sync()  # flush earlier dirty pages now, not during the timed run
    measured = run_archiver_sync(folder, config)
    archived = tar_bytes(folder / "archive")
    if measured.returncode != 0 or archived != expected:
        raise RuntimeError(
            f"archiver round {index}: exit {measured.returncode}, {archived} of {expected} "
            f"bytes archived\n{log_tail(folder)}"
        )
    shutil.rmtree(folder)
    return _round("c66-archiver", index, archived, measured)


def _round(tool: str, index: int, size: int, measured: Measured) -> Round:
    return Round(
        tool=tool,
        index=index,
        wall_seconds=measured.wall_seconds,
        bytes=size,
        cpu_seconds=measured.cpu_seconds,
        max_rss_bytes=measured.max_rss_bytes,
        write_bytes=measured.write_bytes,
        oublock_bytes=measured.oublock_bytes,
    )


# ------------------------------------------------------------------ curl baseline


async def _get_json(session: aiohttp.ClientSession, url: str) -> object:
    async with session.get(url) as response:
        response.raise_for_status()
        return (await response.json())["response"]


async def _stack_part_urls(
    session: aiohttp.ClientSession, base_url: str, uid: str
) -> list[tuple[str, str]]:
    """(file name, decoded public URL) of every file of every Ok backup of one stack."""
    found: list[tuple[str, str]] = []
    backups = await _get_json(session, f"{base_url}/stacks/{uid}/backups")
    assert isinstance(backups, list)
    for backup in (b for b in backups if b["backup_status"] == 0):
        stem = f"{base_url}/stacks/{uid}/backups/{backup['id']}/files"
        files = await _get_json(session, stem)
        assert isinstance(files, list)
        for item in files:
            answer = await _get_json(session, f"{stem}/{item['id']}")
            assert isinstance(answer, dict)
            # Cloud 66 encodes the query twice: undo it once, as the archiver does.
            found.append((f"{uid}-{backup['id']}-{item['name']}", answer["public_url"]))
    return found


async def fetch_part_urls(
    base_url: str, stacks: Sequence[str] = tuple(STACKS)
) -> list[tuple[str, str]]:
    """Fresh pre-signed URLs for every part of the data set, through the API."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        per_stack = [await _stack_part_urls(session, base_url, uid) for uid in stacks]
    return [(name, url.replace("%25", "%")) for urls in per_stack for name, url in urls]


def curl_one(folder: Path, name: str, url: str) -> Measured:
    """``curl -o F URL && sync F``, measured."""
    argv = ["sh", "-c", _CURL_SCRIPT, "sh", str(folder / name), url]
    return run_measured(argv)  # curl -sS: only errors reach our stderr


def curl_round(folder: Path, base_url: str, index: int, expected: int) -> Round:
    """Fetch the same parts with curl, 4 at a time, each file fsynced; then delete them."""
    fresh_dir(folder)
    urls = asyncio.run(fetch_part_urls(base_url))  # not timed: the archiver's API calls are
    os.sync()
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        jobs = list(pool.map(lambda job: curl_one(folder, *job), urls))
    wall = time.perf_counter() - began
    fetched = sum(path.stat().st_size for path in folder.iterdir())
    failed = [job.returncode for job in jobs if job.returncode != 0]
    if failed or fetched != expected:
        raise RuntimeError(f"curl round {index}: exits {failed}, {fetched} of {expected} bytes")
    shutil.rmtree(folder)
    return Round(
        tool="curl",
        index=index,
        wall_seconds=wall,
        bytes=fetched,
        cpu_seconds=sum(job.cpu_seconds for job in jobs),
        max_rss_bytes=max(job.max_rss_bytes for job in jobs),
        write_bytes=sum(job.write_bytes or 0 for job in jobs),
        oublock_bytes=sum(job.oublock_bytes for job in jobs),
    )


# ------------------------------------------------------------------ the whole part


def run_throughput(workdir: Path, sizes: Sizes, rounds: int) -> ThroughputResult:
    """Generate the data set once, then alternate archiver and curl rounds (ABBA order)."""
    blob_dir = workdir / "blobs"
    progress(f"generating {sizes.total / 1e6:,.0f} MB of backups in {blob_dir} ...")
    began = time.perf_counter()
    with simulator_process(blob_dir, sizes, workdir / "simulator.log") as (base_url, sim_pid):
        result = ThroughputResult(sizes, generate_seconds=time.perf_counter() - began)
        for index in range(1, rounds + 1):
            # ABBA: alternate which tool goes first, so a drift favours neither.
            order = ("archiver", "curl") if index % 2 else ("curl", "archiver")
            for tool in order:
                result.rounds.append(
                    _one_round(tool, workdir, (base_url, sim_pid), index, sizes.total)
                )
    shutil.rmtree(blob_dir, ignore_errors=True)
    return result


def bench_cpu_seconds() -> float:
    """CPU of this process and of the children it has reaped so far."""
    usages = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return sum(usage.ru_utime + usage.ru_stime for usage in usages)


def _one_round(
    tool: str, workdir: Path, server: tuple[str, int], index: int, expected: int
) -> Round:
    """One measured round, with the CPU other processes used meanwhile (noise on 2 cores)."""
    run = archiver_round if tool == "archiver" else curl_round
    base_url, sim_pid = server
    before = busy_cpu_seconds(), bench_cpu_seconds(), process_cpu_seconds(sim_pid)
    outcome = run(workdir / f"out-{tool}", base_url, index, expected)
    after = busy_cpu_seconds(), bench_cpu_seconds(), process_cpu_seconds(sim_pid)
    busy, ours, sim = (a - b for a, b in zip(after, before, strict=True))
    outcome = dataclasses.replace(outcome, foreign_cpu_seconds=max(0.0, busy - ours - sim))
    progress(
        f"round {index} {outcome.tool:13} {outcome.wall_seconds:6.2f} s "
        f"{outcome.mb_per_second:7.1f} MB/s  cpu {outcome.cpu_seconds:5.2f} s  "
        f"rss {outcome.max_rss_bytes / (1 << 20):5.1f} MiB  "
        f"others' cpu {outcome.foreign_cpu_seconds:5.2f} s"
    )
    return outcome

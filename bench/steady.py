"""Steady state: a pass over many stacks whose backups are all archived already.

The simulator runs in this process (its request counters are only readable here),
served on loopback from this event loop; the archiver is a real ``c66-archiver sync``
process, waited for in a worker thread so the loop keeps serving it.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import TOKEN, fresh_dir, log_tail, progress, run_archiver_sync, write_config
from measure_io import Measured

from archiver.simulator import Simulator, SimulatorServer

BACKUP_SIZE = 1024


@dataclass(frozen=True)
class PassFigures:
    """One archiver pass as the simulator and the process accounting saw it."""

    wall_seconds: float
    cpu_seconds: float
    max_rss_bytes: int
    api_requests: int
    api_requests_by_route: dict[str, int]
    downloads_started: int


@dataclass(frozen=True)
class SteadyResult:
    """The first (archiving) pass and the timed steady-state pass after it."""

    stacks: int
    backups_per_stack: int
    per_page: int
    first: PassFigures
    steady: PassFigures

    @property
    def stack_pages(self) -> int:
        """List requests a perfect pass needs: every page of every stack's backups."""
        return self.stacks * max(1, math.ceil(self.backups_per_stack / self.per_page))

    @property
    def requests_per_stack_page(self) -> float:
        """API requests of the steady pass per stack page (1.0 is the target)."""
        return self.steady.api_requests / self.stack_pages


def populate(sim: Simulator, stacks: int, backups_per_stack: int) -> list[str]:
    """``stacks`` stacks with ``backups_per_stack`` tiny Ok backups each; return the uids."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    uids = [f"steady-{n:04d}" for n in range(1, stacks + 1)]
    for s, uid in enumerate(uids):
        sim.add_stack(uid)
        for b in range(backups_per_stack):
            when = start + timedelta(days=b, minutes=s)
            sim.add_backup(uid, database_name=f"db{s}", size=BACKUP_SIZE, backup_date=when)
    return uids


async def _measured_pass(sim: Simulator, folder: Path, config: Path) -> PassFigures:
    """One ``sync`` process against ``sim``, with the requests it made."""
    sim.stats.reset()
    measured: Measured = await asyncio.to_thread(run_archiver_sync, folder, config)
    if measured.returncode != 0:
        raise RuntimeError(f"steady-state pass: exit {measured.returncode}\n{log_tail(folder)}")
    return PassFigures(
        wall_seconds=measured.wall_seconds,
        cpu_seconds=measured.cpu_seconds,
        max_rss_bytes=measured.max_rss_bytes,
        api_requests=sim.stats.api_requests,
        api_requests_by_route=dict(sim.stats.api_requests_by_path),
        downloads_started=sim.stats.downloads_started,
    )


async def run_steady(workdir: Path, stacks: int, backups_per_stack: int = 3) -> SteadyResult:
    """Archive everything once, then time and count a second pass with nothing new."""
    folder = fresh_dir(workdir / "steady")
    sim = Simulator(token=TOKEN, blob_dir=folder / "blobs")
    progress(f"steady state: creating {stacks} stacks x {backups_per_stack} backups ...")
    began = time.perf_counter()
    uids = populate(sim, stacks, backups_per_stack)
    progress(f"  created in {time.perf_counter() - began:.1f} s")
    async with SimulatorServer(sim) as server:
        config = write_config(folder, server.base_url, uids)
        first = await _measured_pass(sim, folder, config)
        expected = stacks * backups_per_stack
        if first.downloads_started != expected:
            raise RuntimeError(f"first pass downloaded {first.downloads_started} of {expected}")
        progress(f"  first pass {first.wall_seconds:.2f} s, {first.api_requests} requests")
        steady = await _measured_pass(sim, folder, config)
        progress(f"  steady pass {steady.wall_seconds:.2f} s, {steady.api_requests} requests")
    shutil.rmtree(folder, ignore_errors=True)
    return SteadyResult(stacks, backups_per_stack, sim.per_page, first, steady)


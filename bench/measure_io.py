"""Run one command and measure it exactly: wall time, CPU, peak RSS, bytes written.

The child is waited for with ``waitid(WNOWAIT)``: once it has exited it is a
zombie, so ``/proc/<pid>/io`` still holds its final counters (summed over all
its threads and over the children it reaped), and only then is it reaped with
``wait4``, which returns the resource usage of that one child (not of every
child this process ever had, as ``RUSAGE_CHILDREN`` would). No sampling, so no
50 ms granularity in the wall time and no last-sample lag in the counters.

The command is started through this file run as a small launcher process, which
measures it and hands the figures back on a pipe. Linux keeps, in the ``ru_maxrss``
of a process that calls exec, the high-water RSS of the memory it had before (for a
child of Python's subprocess, the parent's own, through vfork): started straight from
the benchmark process (80+ MiB once aiohttp, aiobotocore, asyncssh are imported),
every command would report at least that much. The launcher is a bare interpreter
(about 13 MiB), so the figure is the command's own.

Runnable on its own: ``python bench/measure_io.py CMD [ARGS...]`` prints the
measures as one JSON line on stdout once CMD has finished.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_Output = IO[bytes] | IO[str] | int | None


@dataclass(frozen=True)
class Measured:
    """What one finished process cost."""

    returncode: int
    wall_seconds: float
    user_seconds: float
    system_seconds: float
    max_rss_bytes: int  # ru_maxrss: the largest resident set the process reached
    write_bytes: int | None  # /proc/<pid>/io: bytes it caused to be sent to storage
    cancelled_write_bytes: int | None  # dirty bytes it truncated before writeback
    read_bytes: int | None  # /proc/<pid>/io: bytes fetched from storage
    oublock_bytes: int  # ru_oublock * 512: the same from the rusage side, a cross-check

    @property
    def cpu_seconds(self) -> float:
        """User plus system CPU time."""
        return self.user_seconds + self.system_seconds


def read_proc_io(pid: int) -> dict[str, int]:
    """The counters of ``/proc/<pid>/io`` (empty when unreadable)."""
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return {}
    fields = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {name.strip(): int(value) for name, value in fields}


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdout: _Output = None,
    stderr: _Output = None,
) -> Measured:
    """Run ``argv`` to completion through the launcher and return its measures.

    Never raises on the command's exit code; raises RuntimeError when the launcher fails.
    """
    read_end, write_end = os.pipe()
    launcher = [sys.executable, "-I", str(Path(__file__).resolve()),
                "--result-fd", str(write_end), "--", *argv]
    try:
        process = subprocess.Popen(
            launcher, env=env, cwd=cwd, stdout=stdout, stderr=stderr, pass_fds=(write_end,)
        )
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as results:
        answer = results.read()
    if process.wait() != 0 or not answer:
        raise RuntimeError(f"measure_io launcher failed (exit {process.returncode}): {argv}")
    return Measured(**json.loads(answer))


def measure_here(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdout: _Output = None,
    stderr: _Output = None,
) -> Measured:
    """Run ``argv`` as a child of this process and measure it (the launcher's half)."""
    began = time.perf_counter()
    process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=stdout, stderr=stderr)
    os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
    wall = time.perf_counter() - began
    counters = read_proc_io(process.pid)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
    return Measured(
        returncode=process.returncode,
        wall_seconds=wall,
        user_seconds=usage.ru_utime,
        system_seconds=usage.ru_stime,
        max_rss_bytes=usage.ru_maxrss * 1024,  # Linux reports KiB
        write_bytes=counters.get("write_bytes"),
        cancelled_write_bytes=counters.get("cancelled_write_bytes"),
        read_bytes=counters.get("read_bytes"),
        oublock_bytes=usage.ru_oublock * 512,
    )


def main(argv: list[str]) -> int:
    """Measure ``argv`` and print the result as JSON; return the command's exit code.

    ``--result-fd N --`` (how ``run_measured`` calls it): the JSON goes to file
    descriptor N instead, and the exit code is 0 whatever the command's.
    """
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    if argv[0] == "--result-fd":
        result_fd, command = int(argv[1]), argv[3:]
        measured = measure_here(command)  # close_fds: the command does not get result_fd
        with os.fdopen(result_fd, "w") as out:
            out.write(json.dumps(dataclasses.asdict(measured)))
        return 0
    measured = measure_here(argv)
    print(json.dumps(dataclasses.asdict(measured)))
    return measured.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""`c66-archiver verify` of a 1 GiB backup beside `sha256sum` of the same file, same run.

The simulator (in this process) makes one backup, `c66-archiver sync` archives it
into local storage, then rounds alternate (forward, then backward) between
`c66-archiver verify` (the whole command: start-up, state, manifest, stream,
hash), `sha256sum` of the archived tar and `openssl dgst -sha256` of it, all from
the page cache, each measured by `measure_io.py` (wall time, CPU, peak RSS of that
process alone). Goal: verify >= 0.8x sha256sum's throughput, peak RSS flat whatever
the size. OpenSSL is there because Debian's coreutils sha256sum does not use the
CPU's SHA instructions and Python's hashlib (OpenSSL) does: beating sha256sum alone
would say little.

    .venv/bin/python bench/verify_bench.py            # 1 GiB, 4 rounds
    .venv/bin/python bench/verify_bench.py --quick    # 128 MiB, 2 rounds
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import (
    GIB,
    REPO_ROOT,
    TOKEN,
    archiver_command,
    child_env,
    progress,
    run_archiver_sync,
    write_config,
)
from measure_io import Measured, run_measured
from medians import medians, one_backup_main, row, table

from archiver.simulator import Simulator, SimulatorServer


async def _archive_one_backup(folder: Path, size: int) -> tuple[Path, Path]:
    """Serve one backup of `size` bytes, archive it with a sync process; (config, tar)."""
    sim = Simulator(token=TOKEN, blob_dir=folder / "blobs", part_size=350_000_000)
    await sim.add_backup_async("bench-stack", size=size)
    async with SimulatorServer(sim) as server:
        config = write_config(folder, server.base_url, ["bench-stack"])
        measured = await asyncio.to_thread(run_archiver_sync, folder, config)
    if measured.returncode != 0:
        raise RuntimeError(f"sync failed: see {folder / 'archiver.log'}")
    shutil.rmtree(folder / "blobs")
    [tar] = (folder / "archive").rglob("*.tar")
    return config, tar


def _verify(config: Path) -> Measured:
    argv = [*archiver_command(), "--config", str(config), "verify"]
    return run_measured(
        argv, env=child_env(), cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _sha256sum(tar: Path) -> Measured:
    return run_measured(["sha256sum", str(tar)], stdout=subprocess.DEVNULL)


def _openssl(tar: Path) -> Measured:
    """Debian's sha256sum does not use the CPU's SHA instructions; OpenSSL (and hashlib) do."""
    return run_measured(["openssl", "dgst", "-sha256", str(tar)], stdout=subprocess.DEVNULL)


TOOLS = ("verify", "sha256sum", "openssl")


def run(size: int, rounds: int) -> dict[str, Any]:
    """Archive once, then alternate the two readers; medians per tool."""
    folder = Path(tempfile.mkdtemp(prefix="c66-verify-bench-", dir="/var/tmp"))
    try:
        config, tar = asyncio.run(_archive_one_backup(folder, size))
        _sha256sum(tar)  # warm the page cache: both read from memory
        rows = []
        readers = {"verify": lambda: _verify(config), "sha256sum": lambda: _sha256sum(tar),
                   "openssl": lambda: _openssl(tar)}
        for index in range(rounds):
            order = TOOLS if index % 2 == 0 else TOOLS[::-1]
            for tool in order:
                measured = readers[tool]()
                if measured.returncode != 0:
                    raise RuntimeError(f"{tool} exited {measured.returncode}")
                rows.append(row(tool, measured, size))
                progress(f"round {index + 1}: {tool} {rows[-1]['mb_s']:.0f} MB/s")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    by_tool = medians(rows, TOOLS)
    ratio = by_tool["verify"]["mb_s"] / by_tool["sha256sum"]["mb_s"]
    openssl_ratio = by_tool["verify"]["mb_s"] / by_tool["openssl"]["mb_s"]
    return {"size": size, "rounds": rounds, "medians": by_tool, "ratio": ratio,
            "openssl_ratio": openssl_ratio, "rows": rows}


def render(result: dict[str, Any]) -> str:
    """The Markdown table of medians and the ratios."""
    title = (f"verify of one {result['size'] / GIB:.2f} GiB backup vs sha256sum and openssl "
             "of the same file, page cache warm")
    verdict = "met" if result["ratio"] >= 0.8 else "NOT met"
    return "\n".join([
        *table(title, "tool", result),
        "",
        f"verify / sha256sum = **{result['ratio']:.2f}x** (goal >= 0.8x: {verdict}); "
        f"verify / openssl dgst -sha256 = {result['openssl_ratio']:.2f}x",
    ])


def main(argv: list[str] | None = None) -> int:
    """Run and print the table; the JSON record goes to stderr's last line."""
    return one_backup_main("bench/verify_bench.py", __doc__, run, render, argv)


if __name__ == "__main__":
    sys.exit(main())

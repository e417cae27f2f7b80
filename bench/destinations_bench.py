"""`c66-archiver sync` of one 1 GiB backup into one, two and three destinations, same run.

What one download into several destinations costs: a simulator process
(``python -m archiver.simulator``) serves one single-part backup from a blob file
written before any timing. Each round archives it, with fresh archives and state,
into one local folder, two folders, or two folders and a third that encrypts
(age), in an order rotated every round; ``measure_io.py`` measures wall time,
CPU and peak RSS of the process alone. That each byte is fetched once however
many destinations there are is counted by the tests
(tests/test_several_destinations.py). Every plain copy's sha256 is checked
against the blob's after the round, untimed.

    .venv/bin/python bench/destinations_bench.py            # 1 GiB, 4 rounds each
    .venv/bin/python bench/destinations_bench.py --quick    # 128 MiB, 2 rounds each
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyrage
from common import GIB, fresh_dir, log_tail, progress, quoted, run_archiver_sync, write_config
from measure_io import Measured
from medians import medians, one_backup_main, row, table
from throughput import serve_one_backup, whole_file_sha256

STACK = "stack-1"
VARIANTS = ("1 folder", "2 folders", "2 folders + 1 encrypted")


def _destination(name: str, folder: Path, extra: str = "") -> str:
    return f'[[storage]]\nname = "{name}"\ntype = "local"\npath = {quoted(str(folder))}\n{extra}'


def _config(folder: Path, base_url: str, variant: str, recipient: str) -> Path:
    """The usual bench config, its one [storage] replaced by the variant's destinations."""
    config = write_config(folder, base_url, [STACK])
    text = config.read_text()
    start = text.index("[storage]\n")
    end = text.index("[state]\n")
    destinations = [_destination("a", folder / "archive")]
    if variant != VARIANTS[0]:
        destinations.append(_destination("b", folder / "archive-b"))
    if variant == VARIANTS[2]:
        sealed = f"encryption = {{ recipients = [{quoted(recipient)}] }}\n"
        destinations.append(_destination("c", folder / "archive-c", sealed))
    config.write_text(text[:start] + text[end:] + "".join(destinations))
    return config


def _check(folder: Path, variant: str, expected_sha256: str) -> None:
    """Every plain copy holds the backup (untimed); the encrypted one holds an age file."""
    folders = ["archive"] + (["archive-b"] if variant != VARIANTS[0] else [])
    for name in folders:
        [tar] = (folder / name).rglob("*.tar")
        if whole_file_sha256(tar) != expected_sha256:
            raise RuntimeError(f"{tar}: sha256 differs from the simulator's")
    if variant == VARIANTS[2]:
        [sealed] = (folder / "archive-c").rglob("*.tar.age")
        if sealed.stat().st_size <= 0:
            raise RuntimeError(f"{sealed}: empty")


def _row(variant: str, measured: Measured, size: int, folder: Path) -> dict[str, Any]:
    if measured.returncode != 0:
        raise RuntimeError(f"{variant} sync exited {measured.returncode}:\n{log_tail(folder)}")
    return row(variant, measured, size)


def run(size: int, rounds: int) -> dict[str, Any]:
    """Rotate the variants against one simulator; medians per variant."""
    root = Path(tempfile.mkdtemp(prefix="c66-destinations-bench-", dir="/var/tmp"))
    try:
        recipient = str(pyrage.x25519.Identity.generate().to_public())
        with serve_one_backup(root / "blobs", size, root / "simulator.log") as base_url:
            [blob] = [p for p in (root / "blobs").rglob("*") if p.is_file()]
            expected = whole_file_sha256(blob)
            rows = []
            for index in range(rounds * len(VARIANTS)):
                turn, offset = divmod(index, len(VARIANTS))
                variant = VARIANTS[(offset + turn) % len(VARIANTS)]  # rotated every round
                folder = fresh_dir(root / "run")
                config = _config(folder, base_url, variant, recipient)
                os.sync()  # earlier dirty pages are not this round's to flush
                rows.append(_row(variant, run_archiver_sync(folder, config), size, folder))
                progress(f"{variant}: {rows[-1]['mb_s']:.0f} MB/s, {rows[-1]['rss_mib']:.0f} MiB")
                _check(folder, variant, expected)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"size": size, "rounds": rounds, "medians": medians(rows, VARIANTS), "rows": rows}


def render(result: dict[str, Any]) -> str:
    """The Markdown table of medians."""
    title = (f"`sync` of one {result['size'] / GIB:.2f} GiB backup into 1, 2 and 3 local "
             "destinations (one download each time)")
    return "\n".join(table(title, "destinations", result))


def main(argv: list[str] | None = None) -> int:
    """Run and print the table; the JSON record goes to stderr's last line."""
    return one_backup_main("bench/destinations_bench.py", __doc__, run, render, argv)


if __name__ == "__main__":
    sys.exit(main())

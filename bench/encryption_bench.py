"""`c66-archiver sync` of one 1 GiB backup, encrypted with age vs not, same run.

A simulator process (``python -m archiver.simulator``) serves one single-part
backup from a blob file written before any timing. Rounds alternate (ABBA)
between a config without ``[encryption]`` and one with an X25519 recipient; each
round archives into a fresh local archive and state, measured by ``measure_io.py``
(wall time, CPU, peak RSS of that process alone). The plaintext tar's sha256 is
checked against the simulator's after every plain round; the first encrypted round
is decrypted with the ``age`` CLI (when installed) and its sha256 checked, the rest
have their size checked against the manifest's ``stored_size``. Nothing checked is
timed.

    .venv/bin/python bench/encryption_bench.py            # 1 GiB, 4 rounds each
    .venv/bin/python bench/encryption_bench.py --quick    # 128 MiB, 2 rounds each
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyrage
from common import (
    GIB,
    MIB,
    fresh_dir,
    log_tail,
    progress,
    quoted,
    run_archiver_sync,
    write_config,
)
from measure_io import Measured
from medians import medians, one_backup_main, row, table
from throughput import serve_simulator

STACK = "stack-1"
VARIANTS = ("plain", "encrypted")


@contextmanager
def _simulator(blob_dir: Path, size: int, log: Path) -> Iterator[str]:
    """One stack, one backup of ``size`` bytes as a single part; yields the base URL."""
    with serve_simulator(
        blob_dir, log, "--stacks", "1", "--backups-per-stack", "1",
        "--backup-size", str(size), "--part-size", str(size + 1),
    ) as (base_url, _):
        yield base_url


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def _decrypted_sha256(identity: Path, sealed: Path) -> str:
    """sha256 of what the ``age`` CLI decrypts ``sealed`` to, streamed."""
    digest = hashlib.sha256()
    argv = ["age", "--decrypt", "--identity", str(identity), str(sealed)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE) as age:
        assert age.stdout is not None
        while chunk := age.stdout.read(4 * MIB):
            digest.update(chunk)
    if age.returncode != 0:
        raise RuntimeError(f"age --decrypt exited {age.returncode}")
    return digest.hexdigest()


def _config(folder: Path, base_url: str, variant: str, recipient: str) -> Path:
    config = write_config(folder, base_url, [STACK])
    if variant == "encrypted":
        with config.open("a") as toml:
            toml.write(f"[encryption]\nrecipients = [{quoted(recipient)}]\n")
    return config


def _archived(folder: Path) -> tuple[Path, dict[str, Any]]:
    """The one archived data file and its manifest."""
    [manifest_path] = (folder / "archive").rglob("manifest.json")
    [data] = [p for p in manifest_path.parent.iterdir() if p.name != "manifest.json"]
    return data, json.loads(manifest_path.read_text())


def _check(folder: Path, variant: str, expected_sha256: str, identity: Path | None) -> None:
    """The archived bytes are right (untimed): plaintext hashed, ciphertext sized or decrypted."""
    data, manifest = _archived(folder)
    if variant == "plain":
        if _file_sha256(data) != expected_sha256:
            raise RuntimeError(f"{data}: sha256 differs from the simulator's")
        return
    if data.stat().st_size != manifest["stored_size"]:
        raise RuntimeError(f"{data}: size differs from the manifest's stored_size")
    if identity is not None:
        if _decrypted_sha256(identity, data) != expected_sha256:
            raise RuntimeError(f"{data}: decrypted sha256 differs from the simulator's")
        progress("encrypted archive decrypted by the age CLI: sha256 matches")


def _row(variant: str, measured: Measured, size: int, folder: Path) -> dict[str, Any]:
    if measured.returncode != 0:
        raise RuntimeError(f"{variant} sync exited {measured.returncode}:\n{log_tail(folder)}")
    return row(variant, measured, size)


def _write_identity(folder: Path) -> tuple[str, Path]:
    identity = pyrage.x25519.Identity.generate()
    path = folder / "identity.txt"
    path.write_text(str(identity) + "\n")
    path.chmod(0o600)
    return str(identity.to_public()), path


def run(size: int, rounds: int) -> dict[str, Any]:
    """Alternate the two variants against one simulator; medians per variant."""
    root = Path(tempfile.mkdtemp(prefix="c66-encryption-bench-", dir="/var/tmp"))
    try:
        recipient, identity = _write_identity(root)
        can_decrypt = shutil.which("age") is not None
        with _simulator(root / "blobs", size, root / "simulator.log") as base_url:
            [blob] = [p for p in (root / "blobs").rglob("*") if p.is_file()]
            expected = _file_sha256(blob)
            rows = []
            for index in range(rounds * 2):
                variant = VARIANTS[(index + index // 2) % 2]  # ABBA
                folder = fresh_dir(root / "run")
                config = _config(folder, base_url, variant, recipient)
                os.sync()  # earlier dirty pages are not this round's to flush
                rows.append(_row(variant, run_archiver_sync(folder, config), size, folder))
                progress(f"{variant}: {rows[-1]['mb_s']:.0f} MB/s, {rows[-1]['rss_mib']:.0f} MiB")
                first_encrypted = variant == "encrypted" and can_decrypt
                _check(folder, variant, expected, identity if first_encrypted else None)
                can_decrypt = can_decrypt and not first_encrypted
    finally:
        shutil.rmtree(root, ignore_errors=True)
    by_variant = medians(rows, VARIANTS)
    ratio = by_variant["encrypted"]["mb_s"] / by_variant["plain"]["mb_s"]
    return {"size": size, "rounds": rounds, "medians": by_variant, "ratio": ratio, "rows": rows}


def render(result: dict[str, Any]) -> str:
    """The Markdown table of medians and the ratio."""
    title = (f"`sync` of one {result['size'] / GIB:.2f} GiB backup into local storage, "
             "age-encrypted vs not, ABBA")
    ratio = f"encrypted / plain throughput = **{result['ratio']:.2f}x**"
    return "\n".join([*table(title, "variant", result), "", ratio])


def main(argv: list[str] | None = None) -> int:
    """Run and print the table; the JSON record goes to stderr's last line."""
    return one_backup_main("bench/encryption_bench.py", __doc__, run, render, argv)


if __name__ == "__main__":
    sys.exit(main())

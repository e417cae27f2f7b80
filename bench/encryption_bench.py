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

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
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
    REPO_ROOT,
    TOKEN,
    child_env,
    fresh_dir,
    log_tail,
    progress,
    quoted,
    run_archiver_sync,
    write_config,
)
from measure_io import Measured

STACK = "stack-1"
VARIANTS = ("plain", "encrypted")


@contextmanager
def _simulator(blob_dir: Path, size: int, log: Path) -> Iterator[str]:
    """One stack, one backup of ``size`` bytes as a single part; yields the base URL."""
    argv = [
        sys.executable, "-m", "archiver.simulator", "--blob-dir", str(blob_dir),
        "--token", TOKEN, "--stacks", "1", "--backups-per-stack", "1",
        "--backup-size", str(size), "--part-size", str(size + 1), "--url-lifetime", "3600",
    ]
    with log.open("wb") as errors:
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=errors, cwd=REPO_ROOT, env=child_env()
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once the blob file is written
        if not line:
            raise RuntimeError(f"the simulator did not start: {log.read_text()[-2000:]}")
        yield str(json.loads(line)["base_url"])
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


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
    return {
        "variant": variant,
        "wall_s": measured.wall_seconds,
        "mb_s": size / 1e6 / measured.wall_seconds,
        "cpu_s": measured.cpu_seconds,
        "rss_mib": measured.max_rss_bytes / MIB,
    }


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
    medians = {
        variant: {key: statistics.median(r[key] for r in rows if r["variant"] == variant)
                  for key in ("wall_s", "mb_s", "cpu_s", "rss_mib")}
        for variant in VARIANTS
    }
    ratio = medians["encrypted"]["mb_s"] / medians["plain"]["mb_s"]
    return {"size": size, "rounds": rounds, "medians": medians, "ratio": ratio, "rows": rows}


def render(result: dict[str, Any]) -> str:
    """The Markdown table of medians."""
    lines = [
        f"`sync` of one {result['size'] / GIB:.2f} GiB backup into local storage, age-encrypted "
        f"vs not (median of {result['rounds']} rounds each, ABBA)",
        "",
        "| variant | wall s | MB/s | CPU s | peak RSS MiB |",
        "| --- | --- | --- | --- | --- |",
    ]
    for variant, figures in result["medians"].items():
        lines.append(
            f"| {variant} | {figures['wall_s']:.2f} | {figures['mb_s']:.0f} | "
            f"{figures['cpu_s']:.2f} | {figures['rss_mib']:.0f} |"
        )
    lines += ["", f"encrypted / plain throughput = **{result['ratio']:.2f}x**"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run and print the table; the JSON record goes to stderr's last line."""
    parser = argparse.ArgumentParser(prog="bench/encryption_bench.py", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="128 MiB, 2 rounds each")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    size = 128 * MIB if args.quick else GIB
    result = run(size, args.rounds or (2 if args.quick else 4))
    print(render(result))
    print(json.dumps(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

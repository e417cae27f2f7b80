"""`c66-archiver sync` of one 1 GiB backup, encrypted with age vs not, same run.

A simulator process (``python -m archiver.simulator``) serves one single-part
backup from a blob file written before any timing. Each round runs every variant
once, in an order that reverses every other round (ABBA, or ABCCBA): a config
without ``[encryption]``, one with an X25519 recipient encrypted by the ``age``
binary (``engine = "age"``), and the same with pyrage in process
(``engine = "pyrage"``, the fallback). With ``--baseline DIR`` (another commit's
source tree, e.g. from ``git archive``) that tree's archiver runs plain and
encrypted in the same rounds, so before and after share the machine's load.
Each round archives into a fresh local archive and state, measured by
``measure_io.py`` (wall time, CPU, peak RSS of that process alone). The
plaintext tar's sha256 is checked against the simulator's after every plain
round; the first encrypted round of each variant is decrypted with the ``age``
CLI and its sha256 checked, the rest have their size checked against the
manifest's ``stored_size``. Nothing checked is timed.

    .venv/bin/python bench/encryption_bench.py            # 1 GiB, 4 rounds each
    .venv/bin/python bench/encryption_bench.py --quick    # 128 MiB, 2 rounds each
    .venv/bin/python bench/encryption_bench.py --baseline /var/tmp/c66-base
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyrage
from common import (
    GIB,
    MIB,
    REPO_ROOT,
    fresh_dir,
    log_tail,
    progress,
    quoted,
    run_archiver_sync,
    write_config,
)
from measure_io import Measured
from medians import medians, row, table
from throughput import serve_one_backup, whole_file_sha256
from transfer import compile_sources

STACK = "stack-1"


@dataclass(frozen=True)
class Variant:
    """One way of running the sync: which tree's archiver, encrypted by what (or not)."""

    name: str
    engine: str | None  # None: plaintext; "" : encrypted, the tree's default engine
    tree: Path | None = None  # None: this checkout


def variants(baseline: Path | None) -> list[Variant]:
    """Plain, age binary, pyrage (this tree); plain and encrypted of the baseline's."""
    chosen = [Variant("plain", None), Variant("encrypted, age binary", "age"),
              Variant("encrypted, pyrage", "pyrage")]
    if baseline is not None:
        chosen += [Variant("baseline plain", None, baseline),
                   Variant("baseline encrypted", "", baseline)]
    return chosen


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


def _config(folder: Path, base_url: str, variant: Variant, recipient: str) -> Path:
    config = write_config(folder, base_url, [STACK])
    if variant.engine is not None:
        with config.open("a") as toml:
            toml.write(f"[encryption]\nrecipients = [{quoted(recipient)}]\n")
            if variant.engine:
                toml.write(f"engine = {quoted(variant.engine)}\n")
    return config


def _archived(folder: Path) -> tuple[Path, dict[str, Any]]:
    """The one archived data file and its manifest."""
    [manifest_path] = (folder / "archive").rglob("manifest.json")
    [data] = [p for p in manifest_path.parent.iterdir() if p.name != "manifest.json"]
    return data, json.loads(manifest_path.read_text())


def _check(folder: Path, variant: Variant, expected_sha256: str, identity: Path | None) -> None:
    """The archived bytes are right (untimed): plaintext hashed, ciphertext sized or decrypted."""
    data, manifest = _archived(folder)
    if variant.engine is None:
        if whole_file_sha256(data) != expected_sha256:
            raise RuntimeError(f"{data}: sha256 differs from the simulator's")
        return
    if data.stat().st_size != manifest["stored_size"]:
        raise RuntimeError(f"{data}: size differs from the manifest's stored_size")
    if identity is not None:
        if _decrypted_sha256(identity, data) != expected_sha256:
            raise RuntimeError(f"{data}: decrypted sha256 differs from the simulator's")
        progress(f"{variant.name}: decrypted by the age CLI, sha256 matches")


def _row(variant: Variant, measured: Measured, size: int, folder: Path) -> dict[str, Any]:
    if measured.returncode != 0:
        raise RuntimeError(
            f"{variant.name} sync exited {measured.returncode}:\n{log_tail(folder)}"
        )
    return row(variant.name, measured, size)


def _write_identity(folder: Path) -> tuple[str, Path]:
    identity = pyrage.x25519.Identity.generate()
    path = folder / "identity.txt"
    path.write_text(str(identity) + "\n")
    path.chmod(0o600)
    return str(identity.to_public()), path


def run(size: int, rounds: int, baseline: Path | None = None) -> dict[str, Any]:
    """Every variant once a round, the order reversed every other round; medians."""
    chosen = variants(baseline)
    if baseline is not None:
        compile_sources([REPO_ROOT, baseline])
    root = Path(tempfile.mkdtemp(prefix="c66-encryption-bench-", dir="/var/tmp"))
    try:
        recipient, identity = _write_identity(root)
        undecrypted = {v.name for v in chosen if v.engine is not None and shutil.which("age")}
        with serve_one_backup(root / "blobs", size, root / "simulator.log") as base_url:
            [blob] = [p for p in (root / "blobs").rglob("*") if p.is_file()]
            expected = whole_file_sha256(blob)
            rows = []
            for index in range(rounds):
                for variant in chosen if index % 2 == 0 else chosen[::-1]:  # ABBA, ABCCBA
                    folder = fresh_dir(root / "run")
                    config = _config(folder, base_url, variant, recipient)
                    os.sync()  # earlier dirty pages are not this round's to flush
                    measured = run_archiver_sync(folder, config, variant.tree)
                    rows.append(_row(variant, measured, size, folder))
                    progress(f"{variant.name}: {rows[-1]['mb_s']:.0f} MB/s, "
                             f"{rows[-1]['rss_mib']:.0f} MiB")
                    first = variant.name in undecrypted
                    _check(folder, variant, expected, identity if first else None)
                    undecrypted.discard(variant.name)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    by_variant = medians(rows, [v.name for v in chosen])
    ratios = {name: figures["mb_s"] / by_variant[_plain_of(name)]["mb_s"]
              for name, figures in by_variant.items() if "plain" not in name}
    return {"size": size, "rounds": rounds, "medians": by_variant, "ratios": ratios,
            "rows": rows}


def _plain_of(name: str) -> str:
    return "baseline plain" if name.startswith("baseline") else "plain"


def render(result: dict[str, Any]) -> str:
    """The Markdown table of medians and the ratios to plaintext."""
    title = (f"`sync` of one {result['size'] / GIB:.2f} GiB backup into local storage, "
             "age-encrypted vs not, alternating")
    ratios = [f"- {name} / {_plain_of(name)} throughput = **{ratio:.2f}x**"
              for name, ratio in result["ratios"].items()]
    return "\n".join([*table(title, "variant", result), "", *ratios])


def main(argv: list[str] | None = None) -> int:
    """1 GiB and 4 rounds (or --quick: 128 MiB, 2); the table on stdout, JSON on stderr."""
    parser = argparse.ArgumentParser(prog="bench/encryption_bench.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="128 MiB, 2 rounds each")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--baseline", type=Path, help="another tree's archiver, same rounds")
    args = parser.parse_args(argv)
    size = 128 * MIB if args.quick else GIB
    result = run(size, args.rounds or (2 if args.quick else 4), args.baseline)
    print(render(result))
    print(json.dumps(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`c66-archiver sync` of one backup into SFTP, on loopback and over a link with latency.

Loopback answers in microseconds, so an SFTP client that awaits each write before
sending the next looks as fast there as one that keeps writes in flight. This
script runs the same ``sync`` of one single-part backup (a simulator process)
into the loopback sshd (``loopback/sshd.py``) both directly and through
``loopback/slow_link.py`` (``--delay`` seconds each way, ``--rate`` bytes/s per
connection). With ``--baseline DIR`` (a source tree of another commit, e.g. from
``git archive``) that tree's archiver runs in the same rounds, alternating ABBA
with this checkout's, so before and after share the machine's load. Each stored
file's sha256 is checked against the simulator's after its timed run.

    .venv/bin/python bench/sftp_bench.py --baseline /var/tmp/c66-base
    .venv/bin/python bench/sftp_bench.py --quick   # 64 MiB, 1 round: checks it runs
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
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from common import (
    MIB,
    REPO_ROOT,
    child_env,
    fresh_dir,
    log_tail,
    progress,
    quoted,
    run_archiver_sync,
    write_config,
)
from medians import medians, row, table
from offsite import expected_sha256
from servers import SftpServer, running_sshd
from throughput import serve_simulator
from transfer import compile_sources

STACK = "stack-1"


@contextmanager
def _slow_link(port: int, delay: float, rate: float) -> Iterator[int]:
    """``python -m loopback.slow_link`` to ``port``; yields the port it listens on."""
    argv = [sys.executable, "-m", "loopback.slow_link", "--to", f"127.0.0.1:{port}",
            "--delay", str(delay), "--rate", str(rate)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=REPO_ROOT, env=child_env())
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        process.terminate()
        process.wait(timeout=10)


def _known_hosts(server: SftpServer, ports: list[int], folder: Path) -> Path:
    """The server's host key under every port it is reached on (the relay's too)."""
    key = server.known_hosts_file.read_text().split(" ", 1)[1]
    path = folder / "known_hosts"
    path.write_text("".join(f"[127.0.0.1]:{port} {key}" for port in ports))
    return path


def _storage(
    server: SftpServer, port: int, known_hosts: Path, remote: Path, writes: int | None
) -> list[str]:
    extra = [] if writes is None else [f"max_concurrent_writes = {writes}"]
    return [*extra,
        'type = "sftp"', 'host = "127.0.0.1"', f"port = {port}",
        f"username = {quoted(server.username)}",
        f"private_key_file = {quoted(str(server.private_key_file))}",
        f"known_hosts_file = {quoted(str(known_hosts))}",
        f"path = {quoted(str(remote / 'archive'))}",
    ]


def _stored_sha256(remote: Path) -> str:
    [tar] = (remote / "archive").rglob("*.tar")
    digest = hashlib.sha256()
    with tar.open("rb") as source:
        while chunk := source.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def _one_run(
    root: Path, server: SftpServer, base_url: str, port: int, known_hosts: Path,
    tree: Path | None, expected: str, writes: int | None,
) -> Any:
    folder = fresh_dir(root / "run")
    remote = fresh_dir(server.base / "bench")
    os.chown(remote, server.uid, server.gid)
    config = write_config(folder, base_url, [STACK], storage=_storage(
        server, port, known_hosts, remote, writes))
    measured = run_archiver_sync(folder, config, tree)
    if measured.returncode != 0:
        raise RuntimeError(f"sync exited {measured.returncode}:\n{log_tail(folder)}")
    if _stored_sha256(remote) != expected:
        raise RuntimeError("the stored file's sha256 differs from the simulator's")
    shutil.rmtree(remote, ignore_errors=True)
    return measured


def run(
    size: int, rounds: int, delay: float, rate: float, baseline: Path | None,
    writes: int | None = None,
) -> dict[str, Any]:
    """Every (link, tree) variant in each round, trees alternating ABBA; medians."""
    trees: list[tuple[str, Path | None]] = [("now", None)]
    if baseline is not None:
        trees.append(("baseline", baseline))
        compile_sources([REPO_ROOT, baseline])
    root = Path(tempfile.mkdtemp(prefix="c66-sftp-bench-", dir="/var/tmp"))
    root.chmod(0o755)  # sshd reads authorized_keys below it as the SFTP user
    rows: list[dict[str, Any]] = []
    try:
        with ExitStack() as stack:
            server = stack.enter_context(running_sshd(root / "sshd"))
            base_url, _ = stack.enter_context(serve_simulator(
                root / "blobs", root / "simulator.log", "--stacks", "1",
                "--backups-per-stack", "1", "--backup-size", str(size),
                "--part-size", str(size + 1)))
            expected = expected_sha256(root / "blobs")
            relayed = stack.enter_context(_slow_link(server.port, delay, rate))
            known_hosts = _known_hosts(server, [server.port, relayed], root)
            links = {"loopback": server.port, f"{delay * 2000:.0f} ms RTT": relayed}
            for index in range(rounds * 2 if baseline else rounds):
                order = trees if (index + index // 2) % 2 == 0 else trees[::-1]  # ABBA
                for link, port in links.items():
                    for name, tree in order:
                        measured = _one_run(root, server, base_url, port, known_hosts, tree,
                                            expected, writes)
                        rows.append(row(f"{name}, {link}", measured, size))
                        progress(f"{rows[-1]['name']}: {rows[-1]['mb_s']:.0f} MB/s")
    finally:
        if not os.environ.get("C66_BENCH_KEEP"):
            shutil.rmtree(root, ignore_errors=True)
    names = list(dict.fromkeys(r["name"] for r in rows))
    return {"size": size, "rounds": rounds, "delay": delay, "rate": rate, "writes": writes,
            "medians": medians(rows, names), "rows": rows}


def render(result: dict[str, Any]) -> str:
    """The Markdown table of medians."""
    cap = f", {result['rate'] / 1e6:.0f} MB/s cap" if result["rate"] else ""
    title = (f"`sync` of one {result['size'] / MIB:.0f} MiB backup into SFTP, on loopback and "
             f"through loopback/slow_link.py ({result['delay'] * 1000:.0f} ms each way{cap})")
    return "\n".join(table(title, "archiver, link", result))


def main(argv: list[str] | None = None) -> int:
    """Parse, run, print the table; the JSON record on stderr's last line."""
    parser = argparse.ArgumentParser(prog="bench/sftp_bench.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64 MiB, 1 round")
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.010, help="one-way latency, seconds")
    parser.add_argument("--rate", type=float, default=0.0, help="bytes/s per connection (0: none)")
    parser.add_argument("--baseline", type=Path, help="another tree's archiver, same rounds")
    parser.add_argument("--writes", type=int, help="[storage] max_concurrent_writes (default: "
                        "the archiver's)")
    args = parser.parse_args(argv)
    size = (64 if args.quick else args.size_mib) * MIB
    result = run(size, 1 if args.quick else args.rounds, args.delay, args.rate, args.baseline,
                 args.writes)
    print(render(result))
    print(json.dumps(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

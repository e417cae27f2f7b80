"""Offsite storage: the 1 GiB multi-part backup archived into local storage, S3 and SFTP.

One simulator process serves the one big backup (parts of 350 MB, as in the
throughput part). A SeaweedFS ``weed mini`` S3 server and an OpenSSH sshd run on
loopback (``loopback/``, started as the test suite starts them), their data on
the same disk as the local target. Each round runs ``c66-archiver sync`` once per
target, measured as in the throughput part (wall time, peak RSS and CPU from
``wait4``), the order of the targets rotated every round. After each timed run the
archived object is read back and its sha256 checked against the simulator's (and
against the manifest, and the object metadata on S3); on S3 the list of multipart
uploads must be empty. Then the round's output is deleted (a fresh bucket per round).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from common import (
    GIB,
    MB,
    MIB,
    busy_cpu_seconds,
    fresh_dir,
    log_tail,
    process_cpu_seconds,
    progress,
    quoted,
    run_archiver_sync,
    write_config,
)
from servers import (
    SSHD,
    RunningS3,
    S3Server,
    SftpServer,
    running_seaweedfs,
    running_sshd,
    tool_version,
    weed_binary,
)
from throughput import Sizes, bench_cpu_seconds, simulator_process

TARGETS = ("local", "s3", "sftp")
STACK = "stack-1"  # the simulator's CLI puts the multi-part backup there
TARGET_RSS_MIB = 150.0
_BLOCK = 4 * MIB


def big_only(sizes: Sizes) -> Sizes:
    """Only the multi-part backup of a throughput data set (no single-part ones)."""
    return Sizes(big=sizes.big, small=0, small_count=0, part_size=sizes.part_size)


@dataclass(frozen=True)
class Verified:
    """What reading the archived backup back found (after the timed run)."""

    size: int
    sha256: str
    manifest_sha256: str
    metadata_sha256: str | None  # S3 only: x-amz-meta-sha256
    multipart_uploads_left: int | None  # S3 only
    read_back_seconds: float


@dataclass(frozen=True)
class OffsiteRound:
    """One timed ``c66-archiver sync`` of the big backup into one target."""

    target: str
    index: int
    wall_seconds: float
    bytes: int
    cpu_seconds: float
    max_rss_bytes: int
    server_cpu_seconds: float | None  # weed / sshd (with its reaped session processes)
    foreign_cpu_seconds: float
    verified: Verified

    @property
    def mb_per_second(self) -> float:
        """Throughput in MB/s (10^6 bytes)."""
        return self.bytes / self.wall_seconds / 1e6


@dataclass
class OffsiteResult:
    """Every round of every target, in the order they ran."""

    sizes: Sizes
    expected_sha256: str
    generate_seconds: float
    servers: dict[str, str]
    rounds: list[OffsiteRound] = field(default_factory=list)

    def of(self, target: str) -> list[OffsiteRound]:
        """The rounds of one target."""
        return [r for r in self.rounds if r.target == target]


# ------------------------------------------------------------------ helpers


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:
            continue
    return found


def _tree(pid: int) -> list[int]:
    """A process and all its descendants, now."""
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        queue += _children(current)
    return pids


class TreeCpu:
    """CPU used by a process and its descendants over a ``with`` block.

    Short-lived descendants (sshd's per-connection processes) are not always reaped
    by the process we know, so their CPU is sampled every 20 ms in a thread: the last
    value seen per pid counts (at most 20 ms of each one's CPU can be missed).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seconds = 0.0
        self._baseline: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _sample(self) -> None:
        for pid in _tree(self.pid):
            cpu = process_cpu_seconds(pid)
            if cpu > 0 or pid not in self._last:
                self._last[pid] = cpu

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self._sample()

    def __enter__(self) -> TreeCpu:
        self._sample()
        self._baseline = dict(self._last)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.seconds = sum(cpu - self._baseline.get(pid, 0.0) for pid, cpu in self._last.items())


def file_sha256(path: Path) -> tuple[int, str]:
    """Size and hex sha256 of a file, read in 4 MiB blocks."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as source:
        while block := source.read(_BLOCK):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def expected_sha256(blob_dir: Path) -> str:
    """What ``Simulator.expected_sha256`` computes: the sha256 of the part files joined."""
    folders = sorted(blob_dir.glob("backup-*"))
    if len(folders) != 1:
        raise RuntimeError(f"expected one backup in {blob_dir}, found {folders}")
    digest = hashlib.sha256()
    for part in sorted(folders[0].glob("part-*")):
        with part.open("rb") as source:
            while block := source.read(_BLOCK):
                digest.update(block)
    return digest.hexdigest()


def _one(paths: list[Path], what: str) -> Path:
    if len(paths) != 1:
        raise RuntimeError(f"expected one {what}, found {[str(p) for p in paths]}")
    return paths[0]


def verify_folder(archive: Path) -> Verified:
    """Read back the tar and manifest of an archive folder on this machine."""
    began = time.perf_counter()
    tar = _one(sorted(archive.rglob("*.tar")), f"tar under {archive}")
    manifest = json.loads((tar.parent / "manifest.json").read_text())
    size, sha256 = file_sha256(tar)
    return Verified(size, sha256, str(manifest["sha256"]), None, None,
                    time.perf_counter() - began)


# ------------------------------------------------------------------ targets


class Target(Protocol):
    """One place to archive into: how to configure, check and empty it per round."""

    name: str

    def storage_lines(self, folder: Path, index: int) -> list[str]:
        """The ``[storage]`` table for this round (a fresh, empty destination)."""

    def server_pid(self) -> int | None:
        """The server process whose tree's CPU is counted (None: no server)."""

    def settle(self) -> None:
        """Wait until the server has finished with the archiver's connections."""

    def verify(self, folder: Path) -> Verified:
        """Read the archived backup back."""

    def clean(self, folder: Path) -> None:
        """Delete what this round wrote."""


class LocalTarget:
    """``type = "local"``: a folder on the benchmark's disk."""

    name = "local"

    def storage_lines(self, folder: Path, index: int) -> list[str]:
        """A fresh archive folder."""
        return ['type = "local"', f"path = {quoted(str(folder / 'archive'))}"]

    def server_pid(self) -> int | None:
        """No server."""
        return None

    def settle(self) -> None:
        """Nothing to wait for."""

    def verify(self, folder: Path) -> Verified:
        """Hash the tar on disk."""
        return verify_folder(folder / "archive")

    def clean(self, folder: Path) -> None:
        """The round's folder goes with the rest."""


class S3Target:
    """``type = "s3"``: a fresh bucket on the SeaweedFS server per round."""

    name = "s3"

    def __init__(self, running: RunningS3) -> None:
        self.running = running
        self.bucket = ""

    @property
    def server(self) -> S3Server:
        """The endpoint and keys."""
        return self.running.server

    def storage_lines(self, folder: Path, index: int) -> list[str]:
        """A new bucket; keys from a secret file, path-style addressing, default parts."""
        self.bucket = f"c66-bench-{index}-{os.urandom(4).hex()}"
        asyncio.run(self._create_bucket())
        secret = folder / "s3-secret"
        secret.write_text(self.server.secret_key + "\n")
        secret.chmod(0o600)
        return [
            'type = "s3"',
            f"bucket = {quoted(self.bucket)}",
            'prefix = "backups/"',
            f"endpoint_url = {quoted(self.server.endpoint_url)}",
            'region = "us-east-1"',
            f"access_key_id = {quoted(self.server.access_key)}",
            f"secret_access_key_file = {quoted(str(secret))}",
            'addressing_style = "path"',
        ]

    async def _create_bucket(self) -> None:
        async with self.server.client() as client:
            await client.create_bucket(Bucket=self.bucket)

    def server_pid(self) -> int | None:
        """``weed mini``: one process for all its services."""
        return self.running.pid

    def settle(self) -> None:
        """Nothing to wait for: every request has been answered once the archiver exits."""

    def verify(self, folder: Path) -> Verified:
        """GetObject of the tar streamed through sha256; manifest, metadata, uploads."""
        return asyncio.run(self._verify())

    async def _verify(self) -> Verified:
        began = time.perf_counter()
        async with self.server.client() as client:
            uploads = await client.list_multipart_uploads(Bucket=self.bucket)
            listing = await client.list_objects_v2(Bucket=self.bucket)
            keys = [str(item["Key"]) for item in listing.get("Contents", [])]
            tars = [key for key in keys if key.endswith(".tar")]
            if len(tars) != 1:
                raise RuntimeError(f"expected one tar in s3://{self.bucket}, found {keys}")
            response = await client.get_object(Bucket=self.bucket, Key=tars[0])
            digest, size = hashlib.sha256(), 0
            async with response["Body"] as body:
                while block := await body.read(_BLOCK):
                    digest.update(block)
                    size += len(block)
            metadata = dict(response.get("Metadata", {}))
            manifest_key = tars[0].rsplit("/", 1)[0] + "/manifest.json"
            answer = await client.get_object(Bucket=self.bucket, Key=manifest_key)
            async with answer["Body"] as body:
                manifest = json.loads(await body.read())
        return Verified(size, digest.hexdigest(), str(manifest["sha256"]),
                        metadata.get("sha256"), len(uploads.get("Uploads", [])),
                        time.perf_counter() - began)

    def clean(self, folder: Path) -> None:
        """Delete every object and the bucket (ignoring errors: the server goes anyway)."""
        if self.bucket:
            try:
                asyncio.run(self._delete_bucket())
            except Exception as error:  # cleaning up is best effort
                progress(f"could not delete bucket {self.bucket}: {error}")
            self.bucket = ""

    async def _delete_bucket(self) -> None:
        async with self.server.client() as client:
            listing = await client.list_objects_v2(Bucket=self.bucket)
            for item in listing.get("Contents", []):
                await client.delete_object(Bucket=self.bucket, Key=item["Key"])
            await client.delete_bucket(Bucket=self.bucket)


class SftpTarget:
    """``type = "sftp"``: a fresh folder of the SFTP user on the loopback sshd per round."""

    name = "sftp"

    def __init__(self, server: SftpServer) -> None:
        self.server = server
        self.remote: Path | None = None

    def storage_lines(self, folder: Path, index: int) -> list[str]:
        """A new folder owned by the SFTP user; the archiver creates ``archive`` in it."""
        self.remote = fresh_dir(self.server.base / f"round-{index}")
        os.chown(self.remote, self.server.uid, self.server.gid)
        return [
            'type = "sftp"',
            f"host = {quoted(self.server.host)}",
            f"port = {self.server.port}",
            f"username = {quoted(self.server.username)}",
            f"private_key_file = {quoted(str(self.server.private_key_file))}",
            f"known_hosts_file = {quoted(str(self.server.known_hosts_file))}",
            f"path = {quoted(str(self.remote / 'archive'))}",
        ]

    def server_pid(self) -> int | None:
        """The sshd listener (its per-connection processes are its descendants)."""
        return self.server.process.pid

    def settle(self) -> None:
        """Wait (up to 5 s) for the session processes to exit, so their CPU is counted."""
        deadline = time.monotonic() + 5
        while self.server.session_pids() and time.monotonic() < deadline:
            time.sleep(0.02)

    def verify(self, folder: Path) -> Verified:
        """Hash the file the server wrote (it is on this machine's disk)."""
        assert self.remote is not None
        return verify_folder(self.remote / "archive")

    def clean(self, folder: Path) -> None:
        """Remove the round's remote folder."""
        if self.remote is not None:
            shutil.rmtree(self.remote, ignore_errors=True)
            self.remote = None


# ------------------------------------------------------------------ rounds


def _check(target: Target, index: int, verified: Verified, size: int, expected: str) -> None:
    problems = []
    if verified.size != size:
        problems.append(f"size {verified.size}, expected {size}")
    for what, value in (("object", verified.sha256), ("manifest", verified.manifest_sha256),
                        ("metadata", verified.metadata_sha256)):
        if value is not None and value != expected:
            problems.append(f"{what} sha256 {value}, expected {expected}")
    if target.name == "s3" and verified.metadata_sha256 is None:
        problems.append("no sha256 in the object metadata")
    if verified.multipart_uploads_left:
        problems.append(f"{verified.multipart_uploads_left} multipart uploads left")
    if problems:
        raise RuntimeError(f"{target.name} round {index}: " + "; ".join(problems))


def offsite_round(
    target: Target, workdir: Path, server: tuple[str, int], index: int, expected: tuple[int, str]
) -> OffsiteRound:
    """Archive the big backup into ``target``, measured; read it back; delete it."""
    base_url, sim_pid = server
    size, sha256 = expected
    folder = fresh_dir(workdir / f"out-{target.name}")
    try:
        config = _config(folder, base_url, target.storage_lines(folder, index))
        os.sync()  # flush earlier dirty pages now, not during the timed run
        pid = target.server_pid()
        watch: AbstractContextManager[TreeCpu | None] = (
            nullcontext() if pid is None else TreeCpu(pid)
        )
        with watch as server_tree:
            before = busy_cpu_seconds(), bench_cpu_seconds(), process_cpu_seconds(sim_pid)
            measured = run_archiver_sync(folder, config)
            target.settle()
            after = busy_cpu_seconds(), bench_cpu_seconds(), process_cpu_seconds(sim_pid)
        if measured.returncode != 0:
            raise RuntimeError(
                f"{target.name} round {index}: exit {measured.returncode}\n{log_tail(folder)}"
            )
        verified = target.verify(folder)
        _check(target, index, verified, size, sha256)
    finally:
        target.clean(folder)
        shutil.rmtree(folder, ignore_errors=True)
    server_cpu = None if server_tree is None else server_tree.seconds
    busy, ours, sim = (a - b for a, b in zip(after, before, strict=True))
    foreign = max(0.0, busy - ours - sim - (server_cpu or 0.0))
    outcome = OffsiteRound(
        target=target.name, index=index, wall_seconds=measured.wall_seconds, bytes=size,
        cpu_seconds=measured.cpu_seconds, max_rss_bytes=measured.max_rss_bytes,
        server_cpu_seconds=server_cpu, foreign_cpu_seconds=foreign, verified=verified,
    )
    progress(
        f"round {index} {target.name:5} {outcome.wall_seconds:6.2f} s "
        f"{outcome.mb_per_second:7.1f} MB/s  cpu {outcome.cpu_seconds:5.2f} s  "
        f"rss {outcome.max_rss_bytes / MIB:5.1f} MiB  server cpu "
        f"{server_cpu or 0.0:5.2f} s  others' {foreign:5.2f} s  sha256 ok "
        f"(read back in {verified.read_back_seconds:.1f} s)"
    )
    return outcome


def _config(folder: Path, base_url: str, storage: list[str]) -> Path:
    return write_config(folder, base_url, [STACK], storage)


def _rotations(rounds: int) -> Iterator[tuple[int, tuple[str, ...]]]:
    """Round numbers with the order of the targets: each goes first in turn."""
    for index in range(1, rounds + 1):
        shift = (index - 1) % len(TARGETS)
        yield index, TARGETS[shift:] + TARGETS[:shift]


def run_offsite(workdir: Path, sizes: Sizes, rounds: int) -> OffsiteResult:
    """Start the simulator and both servers, run the rounds, stop everything (errors too)."""
    sizes = big_only(sizes)
    root = workdir / "offsite"
    # The SFTP user must reach its folder: let others traverse (not list) the scratch.
    workdir.chmod(0o711)
    root.mkdir(mode=0o711)
    blob_dir = root / "blobs"
    progress(f"offsite: generating {sizes.big / 1e6:,.0f} MB in {sizes.big_parts} parts ...")
    began = time.perf_counter()
    with ExitStack() as stack:
        base_url, sim_pid = stack.enter_context(
            simulator_process(blob_dir, sizes, root / "simulator.log")
        )
        generated = time.perf_counter() - began
        sha256 = expected_sha256(blob_dir)
        progress(f"offsite: starting weed mini and sshd (expected sha256 {sha256[:16]}...)")
        targets: dict[str, Target] = {
            "local": LocalTarget(),
            "s3": S3Target(stack.enter_context(running_seaweedfs(root / "seaweedfs"))),
            "sftp": SftpTarget(stack.enter_context(running_sshd(root / "sshd"))),
        }
        result = OffsiteResult(sizes, sha256, generated, _server_versions())
        for index, order in _rotations(rounds):
            for name in order:
                result.rounds.append(
                    offsite_round(targets[name], root, (base_url, sim_pid), index,
                                  (sizes.big, sha256))
                )
    shutil.rmtree(root, ignore_errors=True)
    return result


def _server_versions() -> dict[str, str]:
    return {
        "weed": tool_version([weed_binary(), "version"]),
        "sshd": tool_version([str(SSHD), "-V"]),
    }


# ------------------------------------------------------------------ report


def summary(result: OffsiteResult) -> dict[str, Any]:
    """Per target: medians, peaks, ratio to local, checks."""
    figures: dict[str, Any] = {}
    for target in TARGETS:
        rounds = result.of(target)
        if not rounds:
            continue
        server = [r.server_cpu_seconds for r in rounds if r.server_cpu_seconds is not None]
        left = [r.verified.multipart_uploads_left for r in rounds
                if r.verified.multipart_uploads_left is not None]
        figures[target] = {
            "rounds": len(rounds),
            "wall_seconds": statistics.median(r.wall_seconds for r in rounds),
            "mb_per_second": statistics.median(r.mb_per_second for r in rounds),
            "max_rss_mib": max(r.max_rss_bytes for r in rounds) / MIB,
            "cpu_seconds_per_gib": statistics.median(
                r.cpu_seconds / (r.bytes / GIB) for r in rounds
            ),
            "server_cpu_seconds_per_gib": (
                statistics.median(s / (result.sizes.big / GIB) for s in server) if server else None
            ),
            "sha256_verified": len(rounds),
            "multipart_uploads_left": max(left) if left else None,
        }
    local = figures.get("local", {}).get("mb_per_second")
    for values in figures.values():
        values["ratio_to_local"] = values["mb_per_second"] / local if local else None
    return figures


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def render(result: OffsiteResult, figures: dict[str, Any]) -> list[str]:
    """The Markdown section: a table per target, then every round."""
    sizes = result.sizes
    lines = [
        "## Offsite storage",
        "",
        f"`c66-archiver sync` of one {sizes.big / MIB:,.0f} MiB backup ({sizes.big_parts} "
        f"parts of at most {sizes.part_size / MB:.2f} MB) into each target, "
        f"{len(result.rounds) // len(TARGETS)} round(s), targets rotated each round. "
        f"S3: SeaweedFS {result.servers['weed']} (`weed mini`, loopback, a fresh bucket per round, "
        "default 8 MiB parts, 4 in flight); SFTP: "
        f"{result.servers['sshd']} (loopback, ed25519 keys, known_hosts checked).",
        "",
        _row("Target", "Wall, median (s)", "MB/s, median", "vs local",
             "Peak RSS, max (MiB)", f"RSS < {TARGET_RSS_MIB:.0f} MiB",
             "Archiver CPU s/GiB, median", "Server CPU s/GiB, median", "sha256 verified",
             "Multipart uploads left"),
        _row(*["---"] * 10),
    ]
    for target, values in figures.items():
        ratio = values["ratio_to_local"]
        server = values["server_cpu_seconds_per_gib"]
        left = values["multipart_uploads_left"]
        lines.append(_row(
            target, f"{values['wall_seconds']:.2f}", f"{values['mb_per_second']:.0f}",
            "n/a" if ratio is None else f"{ratio:.2f}x", f"{values['max_rss_mib']:.1f}",
            "yes" if values["max_rss_mib"] < TARGET_RSS_MIB else "**NO**",
            f"{values['cpu_seconds_per_gib']:.2f}", "n/a" if server is None else f"{server:.2f}",
            f"{values['sha256_verified']}/{values['rounds']}",
            "n/a" if left is None else ("0" if left == 0 else f"**{left}**"),
        ))
    lines += [
        "",
        _row("Round", "Target", "Wall (s)", "MB/s", "CPU (s)", "Peak RSS (MiB)",
             "Server CPU (s)", "Others' CPU (s)", "Read back (s)"),
        _row(*["---"] * 9),
    ]
    for r in result.rounds:
        server = "n/a" if r.server_cpu_seconds is None else f"{r.server_cpu_seconds:.2f}"
        lines.append(_row(
            r.index, r.target, f"{r.wall_seconds:.2f}", f"{r.mb_per_second:.0f}",
            f"{r.cpu_seconds:.2f}", f"{r.max_rss_bytes / MIB:.1f}", server,
            f"{r.foreign_cpu_seconds:.2f}", f"{r.verified.read_back_seconds:.1f}",
        ))
    lines += ["", "Offsite notes:", ""] + [f"- {note}" for note in NOTES]
    return lines


NOTES = [
    "All three targets write to the same disk; the servers run on the same 2 cores as the "
    "archiver and the simulator, so their CPU (Server CPU: `weed mini`, or the sshd "
    "listener with its per-connection processes, sampled every 20 ms) slows the archiver "
    "too. A real offsite target costs the archiver "
    "only its own CPU but adds network latency and bandwidth limits not measured here.",
    "Durability differs: local storage and SFTP fsync the file (SFTP through the "
    "fsync@openssh.com extension) before the rename; SeaweedFS acknowledges parts without "
    "an fsync by default.",
    "sha256 verified: after each timed run the archived object is read back (GetObject on "
    "S3, the file the sshd wrote for SFTP) and its sha256 compared with the simulator's "
    "(the part files joined), with the manifest's and, on S3, with `x-amz-meta-sha256`. "
    "Multipart uploads left: `list_multipart_uploads` on the bucket after the pass.",
    "Wall time includes Python start-up, config, state creation, API calls, the S3 "
    "multipart completion and metadata copy, or the SFTP connection and rename.",
]

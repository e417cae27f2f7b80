"""How long a backup's data sits under its final name without its manifest, per destination.

A poller thread scans every destination's folder (two local folders and an SFTP folder
on a loopback sshd, which is a folder on this machine too) every millisecond while one
`c66-archiver sync` archives several backups into all three (with `--s3`, also into a
bucket on a loopback SeaweedFS, whose commit is slower: not polled, but the folders'
manifests waited for it before the fix); for each backup folder it
notes when a final-named `.tar` was first seen without `manifest.json` and when last.
The window is the time between (a lower bound: one poll is ~1 ms).

    .venv/bin/python bench/manifest_window.py                    # this tree
    .venv/bin/python bench/manifest_window.py --code /tmp/base   # another tree's archiver/
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from archiver.simulator import Simulator, SimulatorServer  # noqa: E402
from loopback.seaweedfs import running_seaweedfs  # noqa: E402
from loopback.slow_link import SlowLink  # noqa: E402
from loopback.sshd import running_sshd  # noqa: E402

TOKEN = "bench-token"  # noqa: S105 - the simulator's throwaway token
MIB = 1024 * 1024


class Poller(threading.Thread):
    """Notes, per backup folder, the first and last time its .tar was seen alone."""

    def __init__(self, roots: dict[str, Path]) -> None:
        super().__init__(daemon=True)
        self.roots = roots
        self.alone: dict[tuple[str, str], list[float]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for name, root in self.roots.items():
                for tar in root.rglob("*.tar"):
                    folder = tar.parent
                    if not (folder / "manifest.json").exists() and tar.exists():
                        seen = self.alone.setdefault((name, folder.name), [time.monotonic()] * 2)
                        seen[1] = time.monotonic()
            time.sleep(0.001)

    def windows(self) -> dict[str, list[float]]:
        """Milliseconds alone, per destination."""
        result: dict[str, list[float]] = {name: [] for name in self.roots}
        for (name, _), (first, last) in self.alone.items():
            result[name].append((last - first) * 1000)
        return result


def _table(name: str, path: Path) -> str:
    return f'[[storage]]\nname = "{name}"\ntype = "local"\npath = "{path}"\n'


async def _s3_table(work: Path, stack: ExitStack, delay: float, rate: float | None) -> str:
    """A bucket on a SeaweedFS started for this run, reached through a slow link (`delay` s
    each way, `rate` bytes/s per connection), as a `[[storage]]` table."""
    server = stack.enter_context(running_seaweedfs(work / "seaweedfs")).server
    async with server.client() as client:
        await client.create_bucket(Bucket="window")
    (work / "s3-secret").write_text(server.secret_key + "\n")
    target = urlsplit(server.endpoint_url)
    link = SlowLink((target.hostname or "127.0.0.1", target.port or 80), delay=delay, rate=rate)
    port = await link.start()
    return (
        '[[storage]]\nname = "s3"\ntype = "s3"\nbucket = "window"\n'
        f'endpoint_url = "http://127.0.0.1:{port}"\naccess_key_id = "{server.access_key}"\n'
        f'secret_access_key_file = "{work / "s3-secret"}"\naddressing_style = "path"\n'
    )


async def main(
    code: Path | None, backups: int, size: int, s3: tuple[float, float | None] | None
) -> None:
    work = Path(tempfile.mkdtemp(prefix="c66-window-"))
    sim = Simulator(token=TOKEN, blob_dir=work / "blobs", part_size=4 * MIB)
    sim.add_stack("stack-a")
    for index in range(backups):
        sim.add_backup("stack-a", database_name=f"db{index}", size=size + index)
    (work / "token").write_text(TOKEN + "\n")
    with ExitStack() as stack:
        sshd = stack.enter_context(running_sshd(Path(tempfile.mkdtemp(prefix="c66-sshd-"))))
        s3_table = await _s3_table(work, stack, *s3) if s3 else ""
        remote = Path(tempfile.mkdtemp(prefix="window-", dir=sshd.base))
        os.chown(remote, sshd.uid, sshd.gid)
        key = sshd.storage_table(remote / "archive")
        sftp = "".join(
            f"{k} = {v!r}\n".replace("'", '"') if isinstance(v, str) else f"{k} = {v}\n"
            for k, v in key.items()
        )
        async with SimulatorServer(sim) as server:
            config = work / "config.toml"
            config.write_text(
                f'[api]\nbase_url = "{server.base_url}"\ntoken_file = "{work / "token"}"\n'
                '[[stacks]]\nuid = "stack-a"\n'
                + _table("near", work / "near") + _table("mid", work / "mid")
                + '[[storage]]\nname = "far"\n' + sftp + s3_table
                + f'[state]\npath = "{work / "state"}"\n'
                "[transfer]\nmax_concurrent_downloads = 4\n"
            )
            poller = Poller({"near": work / "near", "mid": work / "mid",
                             "far": remote / "archive"})
            poller.start()
            env = dict(os.environ)
            if code is not None:
                env["PYTHONPATH"] = str(code)
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "archiver", "--config", str(config), "sync",
                env=env, cwd=work, stderr=asyncio.subprocess.PIPE,  # not this tree's archiver/
            )
            _, stderr = await process.communicate()
            poller.done.set()
            poller.join()
    lines = stderr.decode().strip().splitlines()
    print(f"exit {process.returncode}: {lines[-1]}")
    print("\n".join(line for line in lines if "error" in line.lower())[:2000])
    for name, windows in poller.windows().items():
        if windows:
            print(f"{name:5} backups seen alone {len(windows):2}/{backups}: "
                  f"median {statistics.median(windows):7.1f} ms, max {max(windows):7.1f} ms")
        else:
            print(f"{name:5} never seen alone")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, help="a folder holding the archiver/ to run")
    parser.add_argument("--backups", type=int, default=8)
    parser.add_argument("--size", type=int, default=6 * MIB)
    parser.add_argument("--s3", action="store_true", help="a fourth destination on SeaweedFS")
    parser.add_argument("--s3-delay", type=float, default=0.0, help="one-way latency to S3, s")
    parser.add_argument("--s3-rate", type=float, default=0.0, help="bytes/s per S3 connection")
    arguments = parser.parse_args()
    link = (arguments.s3_delay, arguments.s3_rate or None) if arguments.s3 else None
    asyncio.run(main(arguments.code, arguments.backups, arguments.size, link))

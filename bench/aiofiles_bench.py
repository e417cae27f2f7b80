"""aiofiles against what the local backend does now, on the work issue 21 names.

Small files (a 4 KiB manifest or tombstone, read and written 2,000 times) and the
streamed read of verify, restore and filling in (a 1 GiB file in 4 MiB chunks, page
cache warm, the next chunk read while this one is hashed), each both ways on the
same dedicated thread pool, alternating, medians of several rounds:

    .venv/bin/python bench/aiofiles_bench.py [--rounds 5] [--size-mib 1024]

Markdown on stdout. Small files: `LocalStorage.read_small`/`write_small` (one thread
hop each) against the same job written with aiofiles (a hop per open, read or write,
flush, close). Streams: `LocalStorage.read_chunks`, which uses aiofiles since this
measurement, against the pread loop it replaced.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiofiles
import aiofiles.os

from archiver.core.private_files import create_private_file, fsync_folder
from archiver.storage.local import LocalStorage, _pread_all

MIB = 1 << 20
CHUNK = 4 * MIB
SMALL = os.urandom(4096)
SMALL_COUNT = 2000


async def _now_read_small(storage: LocalStorage, keys: list[str]) -> None:
    for key in keys:
        await storage.read_small(key)


async def _aiofiles_read_small(
    storage: LocalStorage, keys: list[str], pool: ThreadPoolExecutor
) -> None:
    for key in keys:
        async with aiofiles.open(storage.root / key, "rb", executor=pool) as source:
            await source.read()


async def _now_write_small(storage: LocalStorage, keys: list[str]) -> None:
    for key in keys:
        await storage.write_small(key, SMALL)


async def _aiofiles_write_small(
    storage: LocalStorage, keys: list[str], pool: ThreadPoolExecutor
) -> None:
    """The same durable write: a new 0600 temp file, write, fsync, rename, fsync the folder."""
    loop = asyncio.get_running_loop()
    for key in keys:
        final = storage.root / key
        temporary = final.with_name(f"{final.name}.{os.urandom(6).hex()}.part")
        descriptor = await loop.run_in_executor(pool, create_private_file, temporary)
        async with aiofiles.open(descriptor, "wb", buffering=0, executor=pool) as out:
            await out.write(SMALL)
            await loop.run_in_executor(pool, os.fsync, descriptor)
        await aiofiles.os.replace(temporary, final, executor=pool)
        await loop.run_in_executor(pool, fsync_folder, final.parent)


async def _aiofiles_stream(storage: LocalStorage, key: str) -> str:
    """`LocalStorage.read_chunks` (aiofiles), hashed the way verify hashes."""
    digest = hashlib.sha256()
    loop = asyncio.get_running_loop()
    async for chunk in storage.read_chunks(key, chunk_size=CHUNK):
        await loop.run_in_executor(None, digest.update, chunk)
    return digest.hexdigest()


async def _pread_stream(storage: LocalStorage, key: str, pool: ThreadPoolExecutor) -> str:
    """The loop read_chunks had before: pread on a descriptor, the next chunk read ahead."""
    digest = hashlib.sha256()
    loop = asyncio.get_running_loop()
    descriptor = os.open(storage.root / key, os.O_RDONLY)

    def read_at(offset: int) -> asyncio.Future[bytes]:
        return loop.run_in_executor(pool, _pread_all, descriptor, CHUNK, offset)

    try:
        pending, offset = read_at(0), 0
        while chunk := await pending:
            offset += len(chunk)
            pending = read_at(offset)
            await loop.run_in_executor(None, digest.update, chunk)
    finally:
        os.close(descriptor)
    return digest.hexdigest()


async def _timed(job: Callable[[], Awaitable[object]]) -> float:
    began = time.perf_counter()
    await job()
    return time.perf_counter() - began


async def measure(root: Path, rounds: int, size: int) -> dict[str, list[float]]:
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bench")
    storage = LocalStorage(root, executor=pool)
    keys = [f"small/{n:04d}.json" for n in range(SMALL_COUNT)]
    await _now_write_small(storage, keys)
    (root / "big.tar").write_bytes(os.urandom(size))
    await _aiofiles_stream(storage, "big.tar")  # page cache warm
    stream = f"stream {size // MIB} MiB + sha256"
    jobs: dict[str, Callable[[], Awaitable[object]]] = {
        "read 4 KiB x2000, one hop (kept)": lambda: _now_read_small(storage, keys),
        "read 4 KiB x2000, aiofiles": lambda: _aiofiles_read_small(storage, keys, pool),
        "durable write 4 KiB x2000, one hop (kept)": lambda: _now_write_small(storage, keys),
        "durable write 4 KiB x2000, aiofiles": lambda: _aiofiles_write_small(storage, keys, pool),
        f"{stream}, pread loop (before)": lambda: _pread_stream(storage, "big.tar", pool),
        f"{stream}, aiofiles (now)": lambda: _aiofiles_stream(storage, "big.tar"),
    }
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for index in range(rounds):
        order = list(jobs) if index % 2 == 0 else list(reversed(jobs))
        for name in order:
            times[name].append(await _timed(jobs[name]))
    pool.shutdown()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as folder:
        times = asyncio.run(measure(Path(folder), args.rounds, args.size_mib * MIB))
    print(f"| job | median of {args.rounds} (s) | per call |")
    print("| --- | --- | --- |")
    for name, values in times.items():
        median = statistics.median(values)
        calls = SMALL_COUNT if "x2000" in name else args.size_mib // (CHUNK // MIB)
        print(f"| {name} | {median:.3f} | {median / calls * 1e6:.0f} µs |")


if __name__ == "__main__":
    main()

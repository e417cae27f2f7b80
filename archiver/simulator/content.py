"""The bytes of a simulated backup: deterministic content, written once into part files.

The content of a backup is a pure function of its seed and a byte position, built from
1 MiB blocks, so any range can be regenerated and a 1 GiB backup never sits in memory.
Parts are named as Cloud 66 names them: split(1)-style suffixes after ``.tar``.
"""

from __future__ import annotations

import collections
import hashlib
import random
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

CHUNK_SIZE = 1 << 20  # 1 MiB: generation block and streaming chunk


def block(base: bytes, index: int) -> bytes:
    """The 1 MiB block number ``index``: a rotation of ``base`` stamped with the index.

    Rotating and stamping are plain memory copies (several GB/s) yet make every block
    differ, so a client that repeats, skips or shifts data changes the hash.
    """
    view = memoryview(base)
    shift = (index * 7919 + 1) % (len(base) - 8)  # <= len - 8 keeps the length exact
    return b"".join((index.to_bytes(8, "little"), view[shift + 8 :], view[:shift]))


def content(seed: int, start: int, end: int) -> Iterator[bytes]:
    """Yield the bytes ``[start, end)`` of the deterministic content for ``seed``."""
    base = random.Random(seed).randbytes(CHUNK_SIZE)
    pos = start
    while pos < end:
        index, offset = divmod(pos, CHUNK_SIZE)
        piece = block(base, index)[offset : offset + (end - pos)]
        yield piece
        pos += len(piece)


def write_part(path: Path, seed: int, start: int, end: int) -> str:
    """Write one part file and return the hex MD5 of its bytes (the S3 ETag).

    MD5 (about 570 MB/s) is the bottleneck, so it runs in its own thread, in order,
    while this one builds and writes the next blocks (both release the GIL).
    """
    digest = hashlib.md5(usedforsecurity=False)
    pending: collections.deque[Future[None]] = collections.deque()
    with ThreadPoolExecutor(max_workers=1) as hasher, path.open("wb") as out:
        for piece in content(seed, start, end):
            pending.append(hasher.submit(digest.update, piece))
            out.write(piece)
            while len(pending) > 8:  # bound memory: at most ~8 MiB in flight
                pending.popleft().result()
        for future in pending:
            future.result()
    return digest.hexdigest()


def part_ids(count: int, database_name: str, legacy: bool) -> list[tuple[str, str]]:
    """File ids and names: ``tar`` for one part, else ``tar-aa``, ``tar-ab``, ... like split(1)."""
    if count == 1:
        return [("tar", f"{database_name}.tar")]
    if count > 26 * 26:
        raise ValueError(f"{count} parts exceed split's two-letter suffixes")
    result = []
    for n in range(count):
        suffix = chr(ord("a") + n // 26) + chr(ord("a") + n % 26)
        separator = "." if legacy else "-"
        result.append((f"tar-{suffix}", f"{database_name}.tar{separator}{suffix}"))
    return result

"""The bytes of a simulated backup: deterministic content, written once into part files.

The content of a backup is a pure function of its seed and a byte position, built from
1 MiB blocks, so any range can be regenerated and a 1 GiB backup never sits in memory.
A backup of 2 KiB or more is a real tar, as Cloud 66's are: one member (the dump)
whose bytes are the blocks, then zeros (padding and the end-of-archive marker), so
`tar -t`, `tarfile` and `verify --deep` read it to its end. Smaller ones are bare bytes.
Parts are named as Cloud 66 names them: split(1)-style suffixes after ``.tar``.
"""

from __future__ import annotations

import collections
import hashlib
import random
import tarfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

CHUNK_SIZE = 1 << 20  # 1 MiB: generation block and streaming chunk
# A header block, then the data and at least the two zero blocks that end a tar.
_SMALLEST_TAR = 4 * tarfile.BLOCKSIZE


def block(base: bytes, index: int) -> bytes:
    """The 1 MiB block number ``index``: a rotation of ``base`` stamped with the index.

    Rotating and stamping are plain memory copies (several GB/s) yet make every block
    differ, so a client that repeats, skips or shifts data changes the hash.
    """
    view = memoryview(base)
    shift = (index * 7919 + 1) % (len(base) - 8)  # <= len - 8 keeps the length exact
    return b"".join((index.to_bytes(8, "little"), view[shift + 8 :], view[:shift]))


@dataclass(frozen=True)
class TarFrame:
    """What makes a backup's blocks one tar: a header before the data, zeros after it."""

    header: bytes
    data_end: int

    @classmethod
    def around(cls, total: int, member: str) -> TarFrame | None:
        """The frame for a backup of `total` bytes, or None below 2 KiB (too small a tar)."""
        if total < _SMALLEST_TAR:
            return None
        info = tarfile.TarInfo(member)
        info.size = total - _SMALLEST_TAR  # data, then >= 1024 zeros after its padding
        info.mode, info.mtime = 0o600, 1_700_000_000
        header = info.tobuf(format=tarfile.GNU_FORMAT)  # GNU: sizes over 8 GiB too
        return cls(header, len(header) + info.size)

    def apply(self, pos: int, piece: bytes) -> bytes:
        """`piece` (the bytes at `pos`) with the header and the trailing zeros laid over it."""
        end = pos + len(piece)
        if pos >= len(self.header) and end <= self.data_end:
            return piece  # the common case: pure member data
        framed = bytearray(piece)
        if pos < len(self.header):
            framed[: len(self.header) - pos] = self.header[pos : min(end, len(self.header))]
        if end > self.data_end:
            zeros_from = max(pos, self.data_end) - pos
            framed[zeros_from:] = bytes(len(framed) - zeros_from)
        return bytes(framed)


def content(seed: int, start: int, end: int, frame: TarFrame | None = None) -> Iterator[bytes]:
    """Yield the bytes ``[start, end)`` of the deterministic content for ``seed``."""
    base = random.Random(seed).randbytes(CHUNK_SIZE)
    pos = start
    while pos < end:
        index, offset = divmod(pos, CHUNK_SIZE)
        piece = block(base, index)[offset : offset + (end - pos)]
        yield piece if frame is None else frame.apply(pos, piece)
        pos += len(piece)


def write_part(path: Path, seed: int, start: int, end: int, frame: TarFrame | None = None) -> str:
    """Write one part file and return the hex MD5 of its bytes (the S3 ETag).

    MD5 (about 570 MB/s) is the bottleneck, so it runs in its own thread, in order,
    while this one builds and writes the next blocks (both release the GIL).
    """
    digest = hashlib.md5(usedforsecurity=False)
    pending: collections.deque[Future[None]] = collections.deque()
    with ThreadPoolExecutor(max_workers=1) as hasher, path.open("wb") as out:
        for piece in content(seed, start, end, frame):
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

"""Reads from an SFTP server as one request per block, every outcome retrieved."""

from __future__ import annotations

import asyncio

import asyncssh

Handle = asyncssh.SFTPClientFile


async def read_blocks(handle: Handle, size: int, offset: int) -> bytes:
    """Up to `size` bytes at `offset`, asked as one request per block of the server's read
    length, side by side; fewer only at the end of the file.

    asyncssh's own split of a longer read loses track of its blocks when the connection
    drops (a keepalive timeout): their failures were never retrieved, and asyncio logged a
    traceback for each. Each block here is a single request, and `gather` retrieves every
    outcome, failed or not (as the writes do, `sftp_writes`).
    """
    block = handle.read_len or size or 1
    starts = range(0, size, block)
    parts = await asyncio.gather(
        *(handle.read(min(block, size - start), offset + start) for start in starts)
    )
    data: list[bytes] = []
    for start, part in zip(starts, parts, strict=True):
        assert isinstance(part, bytes)  # encoding=None: always bytes
        data.append(part)
        if len(part) < min(block, size - start):
            break  # the end of the file is in this block: the later ones are empty
    return b"".join(data)

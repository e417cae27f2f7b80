"""The three real backends as a user configures them, with raw access for tests to look or damage.

`archive_backend` (parametrized: local, s3, sftp) gives the `[storage]` table of a
config and direct access to the stored objects by key: on disk for local and
SFTP (the sshd runs on this machine), with our own S3 client for SeaweedFS.
Tests that must hold on every backend take this fixture.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from loopback.seaweedfs import S3Server
from loopback.sshd import SftpServer

MiB = 1024 * 1024
S3_PREFIX = "archive/"


@dataclass
class ArchiveBackend:
    """One backend: its `[storage]` table and raw access to what it stores."""

    name: str
    storage: dict[str, Any]
    keys: Callable[[], Awaitable[list[str]]]
    read: Callable[[str], Awaitable[bytes]]
    write: Callable[[str, bytes], Awaitable[None]]
    delete: Callable[[str], Awaitable[None]]
    location: Callable[[str], str]  # how `status --json` names a key's object

    async def flip_a_bit(self, key: str, at: int = 100) -> None:
        """Corrupt one bit of a stored object (bit rot)."""
        data = bytearray(await self.read(key))
        data[at] ^= 0x01
        await self.write(key, bytes(data))

    async def cut(self, key: str, keep: int) -> None:
        """Keep only the first `keep` bytes of a stored object."""
        await self.write(key, (await self.read(key))[:keep])


def _on_disk(
    name: str, root: Path, storage: dict[str, Any], url_base: str = ""
) -> ArchiveBackend:
    async def keys() -> list[str]:
        found = root.rglob("*") if root.exists() else iter(())
        return sorted(p.relative_to(root).as_posix() for p in found if p.is_file())

    async def read(key: str) -> bytes:
        return (root / key).read_bytes()

    async def write(key: str, data: bytes) -> None:
        (root / key).write_bytes(data)

    async def delete(key: str) -> None:
        (root / key).unlink()

    def location(key: str) -> str:
        return f"{url_base}{root / key}"

    return ArchiveBackend(name, storage, keys, read, write, delete, location)


def s3_backend(server: S3Server, bucket: str, secret_file: Path) -> ArchiveBackend:
    storage = {
        "type": "s3", "bucket": bucket, "prefix": S3_PREFIX, "endpoint_url": server.endpoint_url,
        "access_key_id": server.access_key, "secret_access_key_file": str(secret_file),
        "addressing_style": "path", "part_size": 5 * MiB,
    }

    async def keys() -> list[str]:
        async with server.client() as client:
            listing = await client.list_objects_v2(Bucket=bucket, Prefix=S3_PREFIX)
        return sorted(item["Key"][len(S3_PREFIX) :] for item in listing.get("Contents", []))

    async def read(key: str) -> bytes:
        async with server.client() as client:
            response = await client.get_object(Bucket=bucket, Key=S3_PREFIX + key)
            async with response["Body"] as body:
                data: bytes = await body.read()
        return data

    async def write(key: str, data: bytes) -> None:
        async with server.client() as client:
            await client.put_object(Bucket=bucket, Key=S3_PREFIX + key, Body=data)

    async def delete(key: str) -> None:
        async with server.client() as client:
            await client.delete_object(Bucket=bucket, Key=S3_PREFIX + key)

    def location(key: str) -> str:
        return f"s3://{bucket}/{S3_PREFIX}{key}"

    return ArchiveBackend("s3", storage, keys, read, write, delete, location)


@pytest.fixture(params=["local", "s3", "sftp"])
def archive_backend(request: pytest.FixtureRequest, tmp_path: Path) -> ArchiveBackend:
    """Each real backend in turn (local folder, SeaweedFS, OpenSSH), empty."""
    if request.param == "local":
        root = tmp_path / "archive"
        return _on_disk("local", root, {"type": "local", "path": str(root)})
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        bucket: str = request.getfixturevalue("s3_bucket")
        secret_file = tmp_path / "s3-secret"
        secret_file.write_text(server.secret_key + "\n")
        return s3_backend(server, bucket, secret_file)
    sshd: SftpServer = request.getfixturevalue("sftp_server")
    folder: Path = request.getfixturevalue("sftp_folder")
    root = folder / "archive"
    url_base = f"sftp://{sshd.username}@127.0.0.1:{sshd.port}"
    return _on_disk("sftp", root, sshd.storage_table(root), url_base)

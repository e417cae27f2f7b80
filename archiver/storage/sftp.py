"""A folder on the user's own server, reached over SFTP (asyncssh), as archive storage.

One SSH connection is opened when first needed and shared by every operation;
when it drops, the operation that noticed reconnects once and tries again
(`archiver.storage.sftp_connection`). Host keys are checked against
`known_hosts_file` (asyncssh's default ~/.ssh/known_hosts when unset); turning
that off is logged as a warning at every connect.

Unfinished data never sits under a final name: an upload writes
`<key>.<random>.part` and renames it into place on commit
(`archiver.storage.sftp_upload`, which keeps several writes in flight). Files are created 0600 and
folders 0700 with an explicit chmod, since the server's umask can only remove
bits. Keys are checked syntactically (`check_key`); symlinks inside the remote
folder are not followed by `list`, and whoever can plant one on the server can
read the archive anyway.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import posixpath
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Collection
from datetime import UTC, datetime, timedelta

import asyncssh
import structlog

from archiver.config.storage import SftpStorageSettings
from archiver.storage.base import (
    LEFTOVER_IDLE,
    PART_SUFFIX,
    READ_CHUNK_SIZE,
    ObjectInfo,
    ResumedUpload,
    check_final_key,
    check_key,
    probe_round_trip,
    removable_leftover,
    written_beside_passes,
)
from archiver.storage.sftp_connection import SftpConnection, create_private, ensure_folder
from archiver.storage.sftp_errors import (
    MISSING,
    SFTP_FAILURES,
    remove_if_present,
)
from archiver.storage.sftp_reads import read_blocks
from archiver.storage.sftp_upload import READ_WRITE, Client, SftpUpload

log = structlog.get_logger(__name__)



def _is_part(name: str) -> bool:
    return name.endswith(PART_SUFFIX)


def _final_of(part: str) -> str:
    """`<final>.<random>.part` -> `<final>`."""
    return part.removesuffix(PART_SUFFIX).rpartition(".")[0]


async def _parts_of(client: Client, final: str) -> builtins.list[tuple[str, int]]:
    """(path, size) of each `<final>.<random>.part` in its folder."""
    folder = posixpath.dirname(final)
    found = []
    for entry in await client.readdir(folder):
        path = posixpath.join(folder, str(entry.filename))
        if _is_part(path) and _final_of(path) == final:
            found.append((path, entry.attrs.size or 0))
    return found


class SftpStorage:
    """The Storage protocol on a folder of an SFTP server (see `archiver.storage.base`)."""

    # Reading back would download the bytes a second time: parts join in order instead.
    supports_read_back = False

    def __init__(self, settings: SftpStorageSettings) -> None:
        self._settings = settings
        self.connection = SftpConnection(settings)
        self._root = self.connection.root
        # Temporary files of small writes in flight. `remove_incomplete` leaves them be: in
        # the daemon a /readyz probe writes while a pass cleans up.
        self._writing: set[str] = set()

    # --- naming -----------------------------------------------------------------------------

    def url(self, remote_path: str) -> str:
        """`sftp://user@host:port/absolute/path` for a remote path."""
        return self.connection.url(remote_path)

    def _remote(self, key: str) -> str:
        """The remote path of `key`, refusing unsafe keys and the reserved `.part` suffix."""
        return posixpath.join(self._root, check_final_key(key))

    def location(self, key: str) -> str:
        """`sftp://<user>@<host>:<port>/<absolute path>` of the archived file."""
        return self.url(self._remote(key))

    # --- the Storage protocol ---------------------------------------------------------------

    async def start_upload(self, key: str) -> SftpUpload:
        """Create a fresh part file, discarding earlier unfinished uploads of `key`."""
        final = self._remote(key)
        part = f"{final}.{secrets.token_hex(6)}{PART_SUFFIX}"

        async def begin(client: Client) -> SftpUpload:
            await ensure_folder(client, posixpath.dirname(final))
            await self._discard_parts_of(client, final)
            handle = await create_private(client, part)
            return SftpUpload(self.connection, final, part, client, handle)

        return await self.connection.run(self.url(final), begin, writing=True)

    async def _discard_parts_of(self, client: Client, final: str) -> None:
        """Remove `<final>.<random>.part` files left by earlier uploads of the same key."""
        for path, _size in await _parts_of(client, final):
            await remove_if_present(client, path)

    async def resume_upload(self, key: str) -> ResumedUpload | None:
        """Reopen the largest `<key>.<random>.part` an earlier upload left (others go)."""
        final = self._remote(key)

        async def reopen(client: Client) -> ResumedUpload | None:
            parts = sorted(await _parts_of(client, final), key=lambda found: found[1])
            for path, _size in parts[:-1]:
                await remove_if_present(client, path)
            if not parts or parts[-1][1] == 0:
                return None
            path, size = parts[-1]
            handle = await client.open(path, READ_WRITE, encoding=None)
            upload = SftpUpload(self.connection, final, path, client, handle, durable=size)
            return ResumedUpload(upload, size)

        try:
            return await self.connection.run(self.url(final), reopen)
        except FileNotFoundError:
            return None  # not even its folder: nothing to resume

    async def write_small(self, key: str, data: bytes) -> None:
        """Temp file in the same folder, fsync, rename over the old one."""
        final = self._remote(key)
        await self.connection.run(
            self.url(final), lambda client: self._write_small(client, final, data), writing=True
        )

    async def _write_small(self, client: Client, final: str, data: bytes) -> None:
        await ensure_folder(client, posixpath.dirname(final))
        temporary = f"{final}.{secrets.token_hex(6)}{PART_SUFFIX}"
        self._writing.add(temporary)  # before it exists: no cleanup takes it for a leftover
        try:
            handle = await create_private(client, temporary)
            try:
                try:
                    await handle.write(data, 0)
                    await self.connection.fsync(handle)
                finally:
                    await handle.close()
                await self.connection.rename_into_place(client, temporary, final)
            except BaseException:
                await asyncio.shield(self._remove_quietly(client, temporary))
                raise
        finally:
            self._writing.discard(temporary)

    @staticmethod
    async def _remove_quietly(client: Client, path: str) -> None:
        with contextlib.suppress(*SFTP_FAILURES):  # remove_incomplete takes it next pass
            await remove_if_present(client, path)

    async def read_small(self, key: str) -> bytes:
        """The whole file; FileNotFoundError when there is none."""
        path = self._remote(key)

        async def read(client: Client) -> bytes:
            handle = await client.open(path, "rb", encoding=None)
            try:
                data = await handle.read()
            finally:
                await handle.close()
            if isinstance(data, str):  # never with encoding=None; for the type checker
                raise TypeError("the SFTP file was opened in text mode")
            return data

        return await self.connection.run(self.url(path), read)

    async def read_chunks(
        self, key: str, *, chunk_size: int = READ_CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]:
        """The remote file in chunks (asyncssh pipelines each chunk's read requests).

        A dropped connection ends the read with a StorageError: a read is cheap to
        start again, and resuming it mid-stream would hide what went wrong.
        """
        path = self._remote(key)
        location = self.url(path)
        handle = await self.connection.run(
            location, lambda client: client.open(path, "rb", encoding=None)
        )
        try:
            offset = 0
            while True:
                try:
                    chunk = await read_blocks(handle, chunk_size, offset)
                except SFTP_FAILURES as error:
                    raise await self.connection.classified(error, location) from error
                if not chunk:
                    return
                offset += len(chunk)
                yield chunk
        finally:
            with contextlib.suppress(*SFTP_FAILURES):
                await handle.close()

    async def stat(self, key: str) -> ObjectInfo | None:
        """Size of a completed regular file, or None (parts are never final names)."""
        path = self._remote(key)
        try:
            attrs = await self.connection.run(self.url(path), lambda client: client.stat(path))
        except FileNotFoundError:
            return None
        if attrs.type != asyncssh.FILEXFER_TYPE_REGULAR:
            return None
        return ObjectInfo(key=key, size=attrs.size or 0)

    async def list(self, prefix: str = "") -> AsyncIterator[str]:
        """Yield completed keys under the folder `prefix`; parts, temps and symlinks hidden."""
        folder = self._root
        trimmed = prefix.strip("/")
        if trimmed:
            folder = posixpath.join(self._root, check_key(trimmed))
        async for path in self._walk(folder):
            if not _is_part(path):
                yield posixpath.relpath(path, self._root)

    async def _walk(self, top: str) -> AsyncIterator[str]:
        """Regular files under `top`, depth first, each folder read in one request."""
        pending = [top]
        while pending:
            folder = pending.pop()
            files, folders = await self.connection.run(
                self.url(folder), functools.partial(_read_folder, folder=folder)
            )
            for name in files:
                yield posixpath.join(folder, name)
            pending.extend(posixpath.join(folder, name) for name in reversed(folders))

    async def shareable_url(self, key: str, expires: timedelta) -> str | None:
        """None: this backend has no URL that Cloud 66 could fetch an object from."""
        del key, expires
        return None

    async def remove(self, key: str) -> None:
        """Delete a completed file and its now-empty folders. Missing is fine."""
        path = self._remote(key)

        async def remove(client: Client) -> None:
            if await remove_if_present(client, path):
                await self._prune_empty_folders(client, posixpath.dirname(path))

        try:
            await self.connection.run(self.url(path), remove)
        except FileNotFoundError:
            return  # a parent is a file, not a folder: nothing to remove either

    async def _prune_empty_folders(self, client: Client, folder: str) -> None:
        """Remove `folder` and its parents while they are empty, stopping at the root."""
        while folder != self._root and folder.startswith(self._root.rstrip("/") + "/"):
            try:
                await client.rmdir(folder)
            except asyncssh.SFTPError:
                return  # not empty (or gone): nothing more to prune
            folder = posixpath.dirname(folder)

    async def remove_incomplete(
        self, keep: Collection[str] = (), *, idle_for: timedelta = LEFTOVER_IDLE
    ) -> int:
        """Delete every `*.part` under the root but those of keys in `keep`, the temp files
        of small writes in flight here, and another process's probe or staging copy while
        it is written (see `Storage.remove_incomplete`); return how many."""
        kept = {self._remote(key) for key in keep}
        removed = 0
        async for path in self._walk(self._root):
            # Asked per file, as the walk goes: a small write may start meanwhile.
            if not _is_part(path) or _final_of(path) in kept or path in self._writing:
                continue
            key = posixpath.relpath(path, self._root)
            if written_beside_passes(key) and not removable_leftover(
                key, await self._modified(path), idle_for=idle_for
            ):
                continue
            removal = functools.partial(remove_if_present, path=path)
            if await self.connection.run(self.url(path), removal):
                removed += 1
        return removed

    async def _modified(self, path: str) -> datetime | None:
        """When the server says `path` was last written; None when it is gone or does not say."""
        try:
            attrs = await self.connection.run(self.url(path), lambda client: client.stat(path))
        except FileNotFoundError:
            return None
        return None if attrs.mtime is None else datetime.fromtimestamp(attrs.mtime, UTC)

    async def probe(self) -> None:
        """Write, read back and delete a probe file at the root; name what failed."""
        await probe_round_trip(self, f"storage {self.url(self._root)}")

    async def aclose(self) -> None:
        """Close the SSH connection."""
        await self.connection.aclose()


async def _read_folder(
    client: Client, folder: str
) -> tuple[builtins.list[str], builtins.list[str]]:
    """Names of the regular files and of the folders in `folder`, sorted; none if missing."""
    try:
        entries = await client.readdir(folder)
    except MISSING:
        return [], []
    files: builtins.list[str] = []
    folders: builtins.list[str] = []
    for entry in entries:
        name = str(entry.filename)
        if name in (".", ".."):
            continue
        # readdir reports lstat types: symlinks are neither, so they are never followed.
        if entry.attrs.type == asyncssh.FILEXFER_TYPE_REGULAR:
            files.append(name)
        elif entry.attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
            folders.append(name)
    return sorted(files), sorted(folders)

"""A folder on the user's own server, reached over SFTP (asyncssh), as archive storage.

One SSH connection is opened when first needed and shared by every operation;
when it drops, the operation that noticed reconnects once and tries again.
Host keys are checked against `known_hosts_file` (asyncssh's default
~/.ssh/known_hosts when unset); turning that off is logged as a warning at
every connect.

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
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Collection
from datetime import timedelta
from typing import TypeVar

import asyncssh
import structlog

from archiver.config.storage import SftpStorageSettings
from archiver.core.errors import PermanentStorageError, StorageFull, TransientStorageError
from archiver.core.private_files import FILE_MODE, FOLDER_MODE
from archiver.core.retry import Backoff, RetryPolicy, retrying
from archiver.storage.base import (
    PART_SUFFIX,
    READ_CHUNK_SIZE,
    ObjectInfo,
    ResumedUpload,
    check_final_key,
    check_key,
    probe_round_trip,
)
from archiver.storage.sftp_errors import (
    DROPPED,
    MISSING,
    NEARLY_FULL_BYTES,
    SFTP_FAILURES,
    classify_sftp_error,
    remove_if_present,
)
from archiver.storage.sftp_upload import READ_WRITE, Client, Handle, SftpUpload

log = structlog.get_logger(__name__)

# A dropped connection is reopened once, at once; a second drop is the operation's failure.
_RECONNECT_ONCE = RetryPolicy(retries=1, backoff=Backoff(base=0.0, cap=0.0))

_T = TypeVar("_T")


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
        self._root = posixpath.normpath(settings.path)
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        self._server = f"{host}:{settings.port}"
        self._url_base = f"sftp://{settings.username}@{self._server}"
        # Writes in flight over every upload (each up to a chunk): back-pressure and memory.
        self.write_limit = asyncio.Semaphore(settings.max_concurrent_writes)
        self._connect_lock = asyncio.Lock()
        self._connection: asyncssh.SSHClientConnection | None = None
        self._client: Client | None = None
        self._fsync_supported = True
        # Temporary files of small writes in flight. `remove_incomplete` leaves them be: in
        # the daemon a /readyz probe writes while a pass cleans up.
        self._writing: set[str] = set()

    # --- naming -----------------------------------------------------------------------------

    def url(self, remote_path: str) -> str:
        """`sftp://user@host:port/absolute/path` for a remote path."""
        return f"{self._url_base}{remote_path}"

    def _remote(self, key: str) -> str:
        """The remote path of `key`, refusing unsafe keys and the reserved `.part` suffix."""
        return posixpath.join(self._root, check_final_key(key))

    def location(self, key: str) -> str:
        """`sftp://<user>@<host>:<port>/<absolute path>` of the archived file."""
        return self.url(self._remote(key))

    # --- the connection ---------------------------------------------------------------------

    async def client(self) -> Client:
        """The shared SFTP client, connecting first when there is none (or it died)."""
        async with self._connect_lock:
            if self._client is None or self._connection is None or self._connection.is_closed():
                self._connection, self._client = await self._connect()
            return self._client

    async def drop_connection(self, broken: Client) -> None:
        """Forget the connection of `broken`, so the next `client()` opens a fresh one.

        A no-op when another operation has already replaced it: the fresh
        connection must not be torn down for an old one's failure.
        """
        async with self._connect_lock:
            if self._client is not broken:
                return
            connection, self._connection, self._client = self._connection, None, None
        if connection is not None:
            connection.abort()

    async def _connect(self) -> tuple[asyncssh.SSHClientConnection, Client]:
        settings = self._settings
        if settings.insecure_skip_host_key_check:
            log.warning(
                "host key checking is OFF (insecure_skip_host_key_check = true): "
                "anyone on the network path can impersonate the server and read the archive",
                server=self._server,
            )
        try:
            connection = await asyncssh.connect(
                settings.host,
                settings.port,
                username=settings.username,
                known_hosts=self._known_hosts(),
                client_keys=self._client_keys(),
                connect_timeout=settings.connect_timeout.total_seconds(),
                keepalive_interval=30,  # notice a dead peer while a long transfer waits
                config=None,  # behave the same whatever ~/.ssh/config says
            )
        except asyncssh.HostKeyNotVerifiable as error:
            raise PermanentStorageError(self._host_key_problem(error)) from error
        except asyncssh.PermissionDenied as error:
            raise PermanentStorageError(
                f"authentication as {settings.username} on {self._server} failed "
                f"(is the public key of {settings.private_key_file or 'your SSH key'} "
                "in the server's authorized_keys?)"
            ) from error
        except (OSError, TimeoutError, asyncssh.Error) as error:
            raise TransientStorageError(f"cannot connect to {self._server}: {error!r}") from error
        return connection, await self._start_sftp(connection)

    async def _start_sftp(self, connection: asyncssh.SSHClientConnection) -> Client:
        try:
            return await connection.start_sftp_client()
        except (OSError, asyncssh.Error) as error:
            connection.abort()
            raise TransientStorageError(
                f"{self._server} accepted SSH but not SFTP: {error!r}"
            ) from error

    def _host_key_problem(self, error: asyncssh.HostKeyNotVerifiable) -> str:
        source = self._settings.known_hosts_file or "~/.ssh/known_hosts"
        return (
            f"host key of {self._server} is not trusted (not in {source}, or it changed): "
            f"{error.reason}"
        )

    def _known_hosts(self) -> str | tuple[()] | None:
        """None turns checking off; () is asyncssh's default (~/.ssh/known_hosts)."""
        if self._settings.insecure_skip_host_key_check:
            return None
        if self._settings.known_hosts_file is not None:
            return str(self._settings.known_hosts_file)
        return ()

    def _client_keys(self) -> builtins.list[asyncssh.SSHKey] | tuple[()]:
        """The configured key, or asyncssh's defaults (agent, ~/.ssh/id_*)."""
        key_file = self._settings.private_key_file
        if key_file is None:
            return ()
        try:
            return [asyncssh.read_private_key(str(key_file))]
        except (OSError, asyncssh.KeyImportError) as error:
            raise PermanentStorageError(
                f"cannot read the SSH private key {key_file}: {error}"
            ) from error

    # --- running operations -----------------------------------------------------------------

    async def twice(
        self,
        location: str,
        action: Callable[[], Awaitable[_T]],
        recover: Callable[[], Awaitable[None]],
        *,
        writing: bool = False,
    ) -> _T:
        """Run `action`; when the connection dropped, `recover` and run it once more.

        `writing`: the action stores data, so a bare 'Failure' means no room (`classified`).
        """

        def dropped(error: BaseException) -> str:
            log.warning("SFTP connection dropped; reconnecting once", server=self._server,
                        error=repr(error))
            return repr(error)

        try:
            return await retrying(
                action, policy=_RECONNECT_ONCE, retry_on=DROPPED, describe=dropped,
                recover=recover,
            )
        except SFTP_FAILURES as error:
            raise await self.classified(error, location, writing=writing) from error

    async def run(
        self, location: str, action: Callable[[Client], Awaitable[_T]], *, writing: bool = False
    ) -> _T:
        """Run `action` on the shared client, reconnecting once; errors become StorageErrors."""
        current = [await self.client()]

        async def reconnect() -> None:
            await self.drop_connection(current[0])
            current[0] = await self.client()

        return await self.twice(location, lambda: action(current[0]), reconnect, writing=writing)

    async def classified(
        self, error: BaseException, location: str, *, writing: bool = False
    ) -> BaseException:
        """`classify_sftp_error`, but a bare SSH_FX_FAILURE on a nearly full disk is ENOSPC,
        and so is one that refused to store data (`writing`), whatever the disk says now."""
        if type(error) is asyncssh.SFTPFailure:
            if await self._nearly_full():
                return StorageFull(f"no space left on {location}")
            if writing:
                return StorageFull(
                    f"no space left on {location} (the server refused to store data: "
                    "'Failure', which OpenSSH answers for a full disk or quota)"
                )
        return classify_sftp_error(error, location)

    async def _nearly_full(self) -> bool:
        client = self._client
        if client is None:
            return False
        try:
            space = await client.statvfs(self._root)
        except SFTP_FAILURES:
            return False  # cannot tell: leave the failure as it is
        return space.bavail * space.frsize < NEARLY_FULL_BYTES

    # --- remote file primitives -------------------------------------------------------------

    async def _ensure_folder(self, client: Client, folder: str) -> None:
        """Create `folder` and its missing parents, each 0700 whatever the server's umask."""
        missing: builtins.list[str] = []
        current = folder
        while current not in ("/", ""):
            try:
                await client.stat(current)
                break
            except MISSING:
                missing.append(current)
                current = posixpath.dirname(current)
        for path in reversed(missing):
            try:
                await client.mkdir(path, asyncssh.SFTPAttrs(permissions=FOLDER_MODE))
            except asyncssh.SFTPError:
                if await client.isdir(path):
                    continue  # a concurrent writer made it; its mode is already ours
                raise
            # Only folders we create are ours to chmod (not e.g. /srv above the root).
            await client.chmod(path, FOLDER_MODE)

    @staticmethod
    async def _create_private(client: Client, path: str) -> Handle:
        """Create a new file 0600 (fails if it exists), open for writing."""
        flags = READ_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_EXCL
        handle = await client.open(
            path, flags, asyncssh.SFTPAttrs(permissions=FILE_MODE), encoding=None
        )
        try:
            await handle.chmod(FILE_MODE)
        except BaseException:
            await handle.close()
            raise
        return handle

    async def fsync(self, handle: Handle) -> None:
        """fsync@openssh.com when the server has it; without it, durability is the server's."""
        if not self._fsync_supported:
            return
        try:
            await handle.fsync()
        except asyncssh.SFTPOpUnsupported:
            self._fsync_supported = False
            log.info("the SFTP server cannot fsync; durability rests on its filesystem",
                     server=self._server)

    async def rename_into_place(self, client: Client, part: str, final: str) -> None:
        """Atomic POSIX rename; without the extension, remove then rename.

        The fallback has a window in which the final name is missing (never one
        in which it holds partial data): a reader then sees "not archived yet"
        and the next pass archives the backup again.
        """
        try:
            await client.posix_rename(part, final)
            return
        except asyncssh.SFTPOpUnsupported:
            pass
        await remove_if_present(client, final)
        await client.rename(part, final)

    # --- the Storage protocol ---------------------------------------------------------------

    async def start_upload(self, key: str) -> SftpUpload:
        """Create a fresh part file, discarding earlier unfinished uploads of `key`."""
        final = self._remote(key)
        part = f"{final}.{secrets.token_hex(6)}{PART_SUFFIX}"

        async def begin(client: Client) -> SftpUpload:
            await self._ensure_folder(client, posixpath.dirname(final))
            await self._discard_parts_of(client, final)
            handle = await self._create_private(client, part)
            return SftpUpload(self, final, part, client, handle)

        return await self.run(self.url(final), begin, writing=True)

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
            upload = SftpUpload(self, final, path, client, handle, durable=size)
            return ResumedUpload(upload, size)

        try:
            return await self.run(self.url(final), reopen)
        except FileNotFoundError:
            return None  # not even its folder: nothing to resume

    async def write_small(self, key: str, data: bytes) -> None:
        """Temp file in the same folder, fsync, rename over the old one."""
        final = self._remote(key)
        await self.run(
            self.url(final), lambda client: self._write_small(client, final, data), writing=True
        )

    async def _write_small(self, client: Client, final: str, data: bytes) -> None:
        await self._ensure_folder(client, posixpath.dirname(final))
        temporary = f"{final}.{secrets.token_hex(6)}{PART_SUFFIX}"
        self._writing.add(temporary)  # before it exists: no cleanup takes it for a leftover
        try:
            handle = await self._create_private(client, temporary)
            try:
                try:
                    await handle.write(data, 0)
                    await self.fsync(handle)
                finally:
                    await handle.close()
                await self.rename_into_place(client, temporary, final)
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

        return await self.run(self.url(path), read)

    async def read_chunks(
        self, key: str, *, chunk_size: int = READ_CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]:
        """The remote file in chunks (asyncssh pipelines each chunk's read requests).

        A dropped connection ends the read with a StorageError: a read is cheap to
        start again, and resuming it mid-stream would hide what went wrong.
        """
        path = self._remote(key)
        location = self.url(path)
        handle = await self.run(location, lambda client: client.open(path, "rb", encoding=None))
        try:
            offset = 0
            while True:
                try:
                    chunk = await handle.read(chunk_size, offset)
                except SFTP_FAILURES as error:
                    raise await self.classified(error, location) from error
                if not chunk:
                    return
                assert isinstance(chunk, bytes)  # encoding=None: always bytes
                offset += len(chunk)
                yield chunk
        finally:
            with contextlib.suppress(*SFTP_FAILURES):
                await handle.close()

    async def stat(self, key: str) -> ObjectInfo | None:
        """Size of a completed regular file, or None (parts are never final names)."""
        path = self._remote(key)
        try:
            attrs = await self.run(self.url(path), lambda client: client.stat(path))
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
            files, folders = await self.run(
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
            await self.run(self.url(path), remove)
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

    async def remove_incomplete(self, keep: Collection[str] = ()) -> int:
        """Delete every `*.part` under the root but those of keys in `keep` and the temp
        files of small writes in flight here; return how many."""
        kept = {self._remote(key) for key in keep}
        removed = 0
        async for path in self._walk(self._root):
            # Asked per file, as the walk goes: a small write may start meanwhile.
            if not _is_part(path) or _final_of(path) in kept or path in self._writing:
                continue
            if await self.run(self.url(path), functools.partial(remove_if_present, path=path)):
                removed += 1
        return removed

    async def probe(self) -> None:
        """Write, read back and delete a probe file at the root; name what failed."""
        await probe_round_trip(self, f"storage {self.url(self._root)}")

    async def aclose(self) -> None:
        """Close the SSH connection."""
        async with self._connect_lock:
            connection, self._connection, self._client = self._connection, None, None
        if connection is not None:
            connection.close()
            await connection.wait_closed()


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

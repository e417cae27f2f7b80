"""The SSH connection of an SFTP destination, shared by every operation on it: opened when
first needed, host keys checked, reopened once when it drops (`twice`, `run`), and its
failures classified (a refused write on a nearly full disk is StorageFull). Also the
file primitives an upload needs on it: private files and folders, fsync, rename.
"""

from __future__ import annotations

import asyncio
import builtins
import posixpath
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncssh
import structlog

from archiver.config.storage import SftpStorageSettings
from archiver.core.errors import PermanentStorageError, StorageFull, TransientStorageError
from archiver.core.private_files import FILE_MODE, FOLDER_MODE
from archiver.core.retry import Backoff, RetryPolicy, retrying
from archiver.storage.sftp_errors import (
    DROPPED,
    MISSING,
    NEARLY_FULL_BYTES,
    SFTP_FAILURES,
    classify_sftp_error,
    remove_if_present,
)
from archiver.storage.sftp_upload import READ_WRITE, Client, Handle

log = structlog.get_logger(__name__)

# A dropped connection is reopened once, at once; a second drop is the operation's failure.
_RECONNECT_ONCE = RetryPolicy(retries=1, backoff=Backoff(base=0.0, cap=0.0))

_T = TypeVar("_T")


# Seconds between keepalives; three unanswered drop the connection (a hung server), and the
# upload reconnects once. Tests shorten it.
KEEPALIVE_INTERVAL = 30.0

class SftpConnection:
    """One SFTP server's shared connection (the `SftpServer` of `sftp_upload`)."""

    def __init__(self, settings: SftpStorageSettings) -> None:
        self._settings = settings
        self.root = posixpath.normpath(settings.path)
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        self._server = f"{host}:{settings.port}"
        self._url_base = f"sftp://{settings.username}@{self._server}"
        # Writes in flight over every upload (each up to a chunk): back-pressure and memory.
        self.write_limit = asyncio.Semaphore(settings.max_concurrent_writes)
        self._connect_lock = asyncio.Lock()
        self._connection: asyncssh.SSHClientConnection | None = None
        self._client: Client | None = None
        self._fsync_supported = True

    def url(self, remote_path: str) -> str:
        """`sftp://user@host:port/absolute/path` for a remote path."""
        return f"{self._url_base}{remote_path}"

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
                keepalive_interval=KEEPALIVE_INTERVAL,  # notice a dead peer while writes wait
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
            space = await client.statvfs(self.root)
        except SFTP_FAILURES:
            return False  # cannot tell: leave the failure as it is
        return space.bavail * space.frsize < NEARLY_FULL_BYTES

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

    async def aclose(self) -> None:
        """Close the SSH connection."""
        async with self._connect_lock:
            connection, self._connection, self._client = self._connection, None, None
        if connection is not None:
            connection.close()
            await connection.wait_closed()


async def ensure_folder(client: Client, folder: str) -> None:
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


async def create_private(client: Client, path: str) -> Handle:
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

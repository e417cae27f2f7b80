"""What an SFTP answer (or a dropped connection) means for us: transient or permanent, named."""

from __future__ import annotations

import asyncssh

from archiver.core.errors import PermanentStorageError, StorageFull, TransientStorageError

# OpenSSH's sftp-server reports ENOSPC (like EDQUOT, EFBIG, EIO) as a bare SSH_FX_FAILURE
# ("Failure"), so a failure is called "no space" when the filesystem has less free than
# this left. A write refused so is a full destination whatever the free space says by
# the time we look: another upload may have given its room back in between.
NEARLY_FULL_BYTES = 1024 * 1024
_NO_SPACE_WORDS = ("no space", "enospc", "quota", "disk full")

# Errors that mean the connection is gone (not that the server refused something).
DROPPED: tuple[type[BaseException], ...] = (
    asyncssh.SFTPConnectionLost,
    asyncssh.SFTPNoConnection,
    asyncssh.DisconnectError,
    asyncssh.ChannelOpenError,
    ConnectionError,
    TimeoutError,
)
MISSING: tuple[type[asyncssh.SFTPError], ...] = (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath)
# Anything the server or the connection can throw at an operation.
SFTP_FAILURES: tuple[type[BaseException], ...] = (asyncssh.SFTPError, *DROPPED)


def _mentions_no_space(error: asyncssh.SFTPError) -> bool:
    reason = str(error.reason).lower()
    return any(words in reason for words in _NO_SPACE_WORDS)


def classify_sftp_error(error: BaseException, location: str) -> BaseException:
    """The StorageError (or FileNotFoundError) an SFTP or connection error stands for."""
    if isinstance(error, MISSING):
        return FileNotFoundError(f"no such file: {location}")
    if isinstance(error, asyncssh.SFTPNoSpaceOnFilesystem | asyncssh.SFTPQuotaExceeded) or (
        isinstance(error, asyncssh.SFTPFailure) and _mentions_no_space(error)
    ):
        return StorageFull(f"no space left on {location}")
    if isinstance(error, asyncssh.SFTPPermissionDenied | asyncssh.SFTPWriteProtect):
        return PermanentStorageError(f"permission denied on {location}")
    if isinstance(error, DROPPED):
        return TransientStorageError(f"connection lost while working on {location}: {error!r}")
    if isinstance(error, asyncssh.SFTPError):
        return TransientStorageError(f"storage error on {location}: {error.reason}")
    return error


async def remove_if_present(client: asyncssh.SFTPClient, path: str) -> bool:
    """Remove `path`; False when it was already gone."""
    try:
        await client.remove(path)
    except MISSING:
        return False
    return True

"""One error tree for the whole program.

Each class says whether it is transient (worth retrying) or permanent. The CLI
maps the top-level kinds to the contract's exit codes (see `exit_code_for`).
Messages must never carry the API token or a URL query string.
"""

from __future__ import annotations

from datetime import datetime

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_CONFIG = 2
EXIT_LOCKED = 3
EXIT_AUTH = 4
# A one-shot pass stopped (SIGTERM, SIGINT) with work left for the next pass: 128 + the
# signal's number, as a shell reports a process the signal ended (143, 130). Not 0: the
# job is not done; not 1: nothing failed. `c66-archiver-sync.service` counts 143 as success.
EXIT_STOPPED_BASE = 128


class ArchiverError(Exception):
    """Base of every error this program raises on purpose."""


class ConfigError(ArchiverError):
    """Permanent: the configuration (file, key or environment) is invalid. Exit 2."""


class LockHeld(ArchiverError):
    """Permanent for this run: another instance holds the state lock. Exit 3."""


class ApiError(ArchiverError):
    """An error talking to the Cloud 66 API."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthError(ApiError):
    """Permanent: the API refused the credentials (401/403). Exit 4."""


class ThrottledError(ApiError):
    """Transient: the API throttled us (503 throttled or 429)."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class ApiUnavailable(ApiError):
    """Transient: 5xx, a timeout or a connection reset."""


class ApiResponseError(ApiError):
    """Permanent for this request: a 4xx other than auth, or a body that is not the envelope."""


class TransferError(ArchiverError):
    """Permanent for one backup in this pass: counted, logged, the pass goes on."""


class UrlExpired(TransferError):
    """Transient: the pre-signed URL expired (S3 answered 403); fetch a new one and resume."""


class IntegrityError(TransferError):
    """Permanent for this attempt: size, sha256 or ETag did not match."""


class StorageError(ArchiverError):
    """An error from a storage backend."""


class TransientStorageError(StorageError):
    """Transient: a network or server hiccup in the storage backend; retry."""


class PermanentStorageError(StorageError):
    """Permanent for this backup: no space left, permission denied, bucket missing."""


class StorageFull(PermanentStorageError):
    """Permanent for this attempt: the destination has no room left (ENOSPC, a quota).

    What the attempt wrote is removed, never kept for a resume (it would hold the
    room every other backup needs); the pass tries the backup once more when other
    uploads give room back (`archiver.sync.room`).
    """


class ObjectLocked(PermanentStorageError):
    """Permanent until a date: S3 Object Lock keeps the object; it can be removed after `until`."""

    def __init__(self, message: str, *, until: datetime | None = None) -> None:
        super().__init__(message)
        self.until = until


def exit_code_for_stop(signum: int) -> int:
    """The exit code of a one-shot pass that signal `signum` stopped before its work was done."""
    return EXIT_STOPPED_BASE + signum


def exit_code_for(error: BaseException) -> int:
    """Map an error that ends a run to the contract's exit code."""
    if isinstance(error, ConfigError):
        return EXIT_CONFIG
    if isinstance(error, LockHeld):
        return EXIT_LOCKED
    if isinstance(error, AuthError):
        return EXIT_AUTH
    return EXIT_PARTIAL

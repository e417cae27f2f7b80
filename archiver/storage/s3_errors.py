"""What an S3 answer means for us: transient or permanent, and a message naming the cause."""

from __future__ import annotations

from botocore.exceptions import ClientError, NoCredentialsError

from archiver.core.errors import (
    PermanentStorageError,
    StorageError,
    StorageFull,
    TransientStorageError,
)

NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
NO_UPLOAD = {"404", "NoSuchUpload"}
_TRANSIENT_CODES = {
    "SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling",
    "ThrottlingException", "RequestTimeTooSkewed", "OperationAborted", "503", "500",
}
# A destination out of room: MinIO (507), Ceph RGW quotas, and HTTP 507 from anyone.
_FULL_CODES = {"XMinioStorageFull", "InsufficientStorage", "QuotaExceeded", "507"}
_HINTS = {
    "InvalidAccessKeyId": "credentials rejected: unknown access key id",
    "SignatureDoesNotMatch": "credentials rejected: the secret key does not match",
    "AccessDenied": "access denied: check the credentials' permissions on the bucket",
    "403": "access denied (HTTP 403): check the credentials and their permissions",
    "NoSuchBucket": "the bucket does not exist",
    "EntityTooLarge": "the object is larger than the service accepts",
}


def error_code(error: ClientError) -> str:
    """The S3 error code ('NoSuchKey'), or the HTTP status for bodiless answers (HEAD)."""
    return str(error.response.get("Error", {}).get("Code", "")) or str(
        error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )


def caused_by(error: StorageError, codes: set[str]) -> bool:
    """True when `error` wraps an S3 answer with one of `codes`."""
    cause = error.__cause__
    return isinstance(cause, ClientError) and error_code(cause) in codes


def classify_s3_error(error: Exception, what: str) -> StorageError:
    """Class a botocore error: network, 5xx and throttling are transient, refusals permanent.

    The message names the operation and the bucket/key (`what`), never credentials.
    """
    if isinstance(error, ClientError):
        code = error_code(error)
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        detail = _HINTS.get(code, code)
        if code in _FULL_CODES or status == 507:  # before the 5xx rule: not worth a retry
            return StorageFull(f"no space left on {what}: the service answered {code}")
        if status >= 500 or code in _TRANSIENT_CODES:
            return TransientStorageError(f"S3 error on {what}: {detail} (HTTP {status})")
        return PermanentStorageError(f"S3 refused {what}: {detail}")
    if isinstance(error, NoCredentialsError):
        return PermanentStorageError(f"S3 {what}: no credentials found (environment or config)")
    # Connection refused, DNS failure, timeouts: botocore already retried them.
    return TransientStorageError(f"S3 {what}: endpoint unreachable ({type(error).__name__})")

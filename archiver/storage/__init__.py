"""Storage backends behind one protocol (`base.Storage`); `open_storage` picks one."""

from __future__ import annotations

import os
import posixpath
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from archiver.config.storage import (
    BackendSettings,
    LocalStorageSettings,
    S3StorageSettings,
    SftpStorageSettings,
)
from archiver.core.errors import ConfigError
from archiver.core.extras import missing_extra_message
from archiver.storage.base import ObjectInfo, SegmentWriter, Storage, Upload
from archiver.storage.local import LocalStorage

__all__ = [
    "ObjectInfo",
    "SegmentWriter",
    "Storage",
    "Upload",
    "describe_storage",
    "location_of",
    "open_storage",
]


def describe_storage(settings: BackendSettings) -> str:
    """Where the archive is, in the form `status` uses for locations."""
    if isinstance(settings, LocalStorageSettings):
        return str(settings.path.absolute())
    if isinstance(settings, S3StorageSettings):
        return f"s3://{settings.bucket}/{settings.prefix}"
    return f"sftp://{settings.username}@{_server(settings)}{settings.path}"


def location_of(settings: BackendSettings, key: str) -> str:
    """How users name the object `key` of this backend, from its settings alone (no connection):
    the same as the backend's own `location`, computed when read, so a moved archive is named
    where it is now. A local absolute path, `s3://bucket/key` or `sftp://user@host:port/path`."""
    if isinstance(settings, LocalStorageSettings):
        return str(Path(os.path.realpath(settings.path)) / key)
    if isinstance(settings, S3StorageSettings):
        trimmed = settings.prefix.strip("/")
        return f"s3://{settings.bucket}/{trimmed + '/' if trimmed else ''}{key}"
    remote = posixpath.join(posixpath.normpath(settings.path), key)
    return f"sftp://{settings.username}@{_server(settings)}{remote}"


def _server(settings: SftpStorageSettings) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"{host}:{settings.port}"


def open_storage(settings: BackendSettings, *, executor: ThreadPoolExecutor) -> Storage:
    """The backend the settings name. Offsite backends are imported only when used."""
    if isinstance(settings, LocalStorageSettings):
        return LocalStorage(settings.path, executor=executor)
    try:
        if isinstance(settings, S3StorageSettings):
            from archiver.storage.s3 import S3Storage  # aiobotocore loads only when used

            return S3Storage(settings)
        if isinstance(settings, SftpStorageSettings):
            from archiver.storage.sftp import SftpStorage  # asyncssh loads only when used

            return SftpStorage(settings)
    except ModuleNotFoundError as error:  # an extra half there (config checks the usual case)
        missing = [error.name or str(error)]
        raise ConfigError(missing_extra_message(settings.type, missing)) from None
    raise ConfigError(f"storage type {settings.type!r} is not available in this build")

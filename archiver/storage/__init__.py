"""Storage backends behind one protocol (`base.Storage`); `open_storage` picks one."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from archiver.config.settings import (
    LocalStorageSettings,
    S3StorageSettings,
    SftpStorageSettings,
    StorageSettings,
)
from archiver.core.errors import ConfigError
from archiver.core.extras import missing_extra_message
from archiver.storage.base import ObjectInfo, SegmentWriter, Storage, Upload
from archiver.storage.local import LocalStorage

__all__ = ["ObjectInfo", "SegmentWriter", "Storage", "Upload", "describe_storage", "open_storage"]


def describe_storage(settings: StorageSettings) -> str:
    """Where the archive is, in the form `status` uses for locations."""
    if isinstance(settings, LocalStorageSettings):
        return str(settings.path.absolute())
    if settings.type == "s3":
        return f"s3://{settings.bucket}/{settings.prefix}"
    return f"sftp://{settings.username}@{settings.host}:{settings.port}{settings.path}"


def open_storage(settings: StorageSettings, *, executor: ThreadPoolExecutor) -> Storage:
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

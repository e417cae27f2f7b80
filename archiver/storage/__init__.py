"""Storage backends behind one protocol (`base.Storage`); `open_storage` picks one."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from archiver.config import LocalStorageSettings, StorageSettings
from archiver.errors import ConfigError
from archiver.storage.base import ObjectInfo, SegmentWriter, Storage, Upload
from archiver.storage.local import LocalStorage

__all__ = ["ObjectInfo", "SegmentWriter", "Storage", "Upload", "open_storage"]


def open_storage(settings: StorageSettings, *, executor: ThreadPoolExecutor) -> Storage:
    """The backend the settings name. Offsite backends are imported only when used."""
    if isinstance(settings, LocalStorageSettings):
        return LocalStorage(settings.path, executor=executor)
    raise ConfigError(f"storage type {settings.type!r} is not available in this build")

"""The destinations of the archive: each a named storage, with how it stores backups.

A destination is one `[storage]` / `[[storage]]` table opened: its name (what the
state, `status` and `--storage` call it), its backend, and its encryption (its
own, none, or `[encryption]`). Several destinations hold copies of the same
backups; `archiver.sync` keeps them filled and `archiver.lifecycle` prunes,
checks and restores each on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from archiver.config.destinations import StorageSettings
from archiver.config.keys import Recipient, parse_recipient
from archiver.config.policies import EncryptionSettings
from archiver.config.settings import Settings, encryption_for
from archiver.config.storage import ObjectLockSettings, S3StorageSettings
from archiver.storage import location_of, open_storage
from archiver.storage.base import Lockable, Storage


@dataclass(frozen=True, eq=False)
class Destination:
    """One named place backups go, open (compared by identity: one object per destination)."""

    name: str
    settings: StorageSettings
    storage: Storage
    encryption: EncryptionSettings | None
    recipients: tuple[Recipient, ...]

    @property
    def encrypted(self) -> bool:
        """True when backups are stored here as age files."""
        return bool(self.recipients)

    @property
    def recipient_texts(self) -> tuple[str, ...]:
        """The public keys backups are encrypted to here (none: plaintext)."""
        return tuple(self.encryption.all_recipients()) if self.encryption else ()

    @property
    def object_lock(self) -> ObjectLockSettings | None:
        """How long committed objects are locked here (S3 Object Lock), if at all."""
        settings = self.settings
        return settings.object_lock if isinstance(settings, S3StorageSettings) else None

    async def lock_problem(self) -> str | None:
        """None when this destination can lock what it is asked to (or asks for no lock), else
        why not: the check `check-config` makes, and each pass before writing here."""
        return await object_lock_problem(self.settings, self.storage)

    def location(self, key: str) -> str:
        """How users name the object `key` here (see `archiver.storage.location_of`)."""
        return location_of(self.settings, key)

    def stores_like(self, encryption: dict[str, Any] | None) -> bool:
        """True when a copy whose manifest says `encryption` is stored as this destination
        stores backups: both plain, or both encrypted to the same recipients."""
        if encryption is None:
            return not self.encrypted
        theirs = {str(text) for text in encryption.get("recipients", ())}
        return self.encrypted and theirs == set(self.recipient_texts)


async def object_lock_problem(settings: StorageSettings, storage: Storage) -> str | None:
    """None unless `settings` asks for Object Lock and `storage` cannot give it; then why not
    (a bucket made without Object Lock, or with it turned off). Storage trouble raises."""
    if not isinstance(settings, S3StorageSettings) or settings.object_lock is None:
        return None
    if not isinstance(storage, Lockable):
        return "this storage cannot lock objects"
    return await storage.lock_problem()


def open_destinations(
    settings: Settings, *, executor: ThreadPoolExecutor
) -> tuple[Destination, ...]:
    """Every configured destination, in the config's order (the order `status` lists)."""
    return tuple(_open(settings, destination, executor) for destination in settings.storage)


def _open(
    settings: Settings, destination: StorageSettings, executor: ThreadPoolExecutor
) -> Destination:
    encryption = encryption_for(settings, destination)
    texts = encryption.all_recipients() if encryption else []
    return Destination(
        name=destination.name,
        settings=destination,
        storage=open_storage(destination, executor=executor),
        encryption=encryption,
        recipients=tuple(parse_recipient(text) for text in texts),
    )


def named(destinations: Sequence[Destination], name: str) -> Destination | None:
    """The destination called `name`, if configured."""
    return next((d for d in destinations if d.name == name), None)

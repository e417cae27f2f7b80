"""A copy committed in one destination: manifest after the data, state after the manifest,
and, where the destination locks objects, the lock after both.

Locking last means a commit that fails (a manifest that could not be written) can
still be undone: nothing is locked until the copy is whole. A lock that fails is
reported, and the copy stays archived; each pass locks what is still unlocked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from archiver.cloud66.models import Backup
from archiver.core.secrets import redact
from archiver.model.layout import BackupKeys
from archiver.model.manifest import ArchivedBackup, Manifest, PartRecord, utc_now_iso
from archiver.state.store import StateStore
from archiver.storage.base import Lockable
from archiver.storage.destinations import Destination
from archiver.transfer.encryption import FORMAT, EncryptionInfo
from archiver.transfer.fan_out import DESTINATION_ERRORS, Member

log = structlog.get_logger(__name__)

# (stack uid, backup id, destination, reason): a destination's failure, for the summary.
FailDestination = Callable[[str, int, str, str], None]


class Committer:
    """Writes manifests, records copies and locks them, destination by destination."""

    def __init__(self, state: StateStore, fail: FailDestination) -> None:
        self._state = state
        self._fail = fail

    async def commit(
        self, destination: Destination, keys: BackupKeys, manifest: Manifest
    ) -> ArchivedBackup | None:
        """Write the manifest and record the copy; None (the failure reported) when it failed."""
        tar_key = _sibling(keys.manifest, manifest.file)
        try:
            await destination.storage.write_small(keys.manifest, manifest.to_json())
        except DESTINATION_ERRORS as error:
            reason = f"could not write the manifest: {redact(str(error))}"
            self._fail(manifest.stack_uid, manifest.backup_id, destination.name, reason)
            return None
        record = manifest.archived_record(
            tar_key=tar_key, manifest_key=keys.manifest, storage=destination.name
        )
        self._state.archived.record(record)
        log.debug("copy archived", storage=destination.name,
                  location=destination.location(tar_key))
        return await self.lock(destination, record)

    async def lock(self, destination: Destination, record: ArchivedBackup) -> ArchivedBackup:
        """Lock data and manifest where the destination asks for it; the record as it stands."""
        lock = destination.object_lock
        storage = destination.storage
        if lock is None or not isinstance(storage, Lockable):
            return record
        until = datetime.now(UTC) + lock.period
        try:
            await storage.lock(record.tar_key, until)
            await storage.lock(record.manifest_key, until)
        except DESTINATION_ERRORS as error:
            reason = f"archived, but could not be locked (retried next pass): {redact(str(error))}"
            self._fail(record.stack_uid, record.backup_id, destination.name, reason)
            return record
        locked_until = until.isoformat()
        self._state.archived.note_lock(
            record.stack_uid, record.backup_id, destination.name, locked_until
        )
        return dataclasses.replace(record, locked_until=locked_until)

    async def lock_pending(self, destinations: Sequence[Destination]) -> None:
        """Lock every copy a locking destination holds unlocked (a lock that failed, or copies
        from before `object_lock` was set)."""
        for destination in destinations:
            if destination.object_lock is None:
                continue
            for record in self._state.archived.all(destination.name):
                if record.locked_until is None:
                    await self.lock(destination, record)


def _sibling(manifest_key: str, name: str) -> str:
    folder = manifest_key.rpartition("/")[0]
    return f"{folder}/{name}" if folder else name


def encryption_info(destination: Destination) -> dict[str, Any] | None:
    """The manifest's `encryption` for backups this destination encrypts."""
    if not destination.encrypted:
        return None
    return EncryptionInfo(FORMAT, destination.recipient_texts).as_dict()


def downloaded_manifest(
    stack_uid: str,
    backup: Backup,
    member: Member,
    size: int,
    sha256: str,
    parts: list[PartRecord],
) -> Manifest:
    """The manifest of a download as `member`'s destination stored it."""
    date = backup.backup_date_iso
    stored = member.stored
    return Manifest(
        stack_uid=stack_uid,
        backup_id=backup.id,
        db_type=str(backup.db_type),
        database_name=str(backup.database_name),
        backup_date=date.isoformat().replace("+00:00", "Z") if date else None,
        size=size,
        sha256=sha256,
        parts=parts,
        archived_at=utc_now_iso(),
        file=member.key.rsplit("/", 1)[-1],
        source=backup.raw,
        stored_size=stored[0] if stored else None,
        stored_sha256=stored[1] if stored else None,
        encryption=encryption_info(member.destination) if stored else None,
    )


def copied_manifest(source: Manifest, member: Member, *, same_form: bool) -> Manifest:
    """The manifest of a copy filled in from `source`: the same backup, stored as `member`'s
    destination stores it."""
    if same_form:
        return dataclasses.replace(source, archived_at=utc_now_iso())
    stored = member.stored
    return dataclasses.replace(
        source,
        archived_at=utc_now_iso(),
        file=member.key.rsplit("/", 1)[-1],
        stored_size=stored[0] if stored else None,
        stored_sha256=stored[1] if stored else None,
        encryption=encryption_info(member.destination) if stored else None,
    )

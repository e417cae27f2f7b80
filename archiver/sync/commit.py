"""A copy committed in one destination: the commit recorded before the data reaches its final
name, the manifest right after the data (each destination on its own, not after the others'
commits: `FanOut`'s `after_commit`), the state after the manifest (`archiver.transfer.commit`:
a manifest that cannot be written takes the data back), and, where the destination locks
objects, the lock after both.

Locking last means a commit that fails can still be undone: nothing is locked until the
copy is whole. A lock that fails is reported, and the copy stays archived; each pass
locks what is still unlocked.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from archiver.cloud66.models import Backup
from archiver.core.secrets import redact
from archiver.model.layout import BackupKeys
from archiver.model.manifest import ArchivedBackup, Manifest, PartRecord, utc_now_iso
from archiver.state.records import PendingCommit
from archiver.state.store import StateStore
from archiver.storage.base import Lockable
from archiver.storage.destinations import Destination
from archiver.transfer import commit
from archiver.transfer.encryption import FORMAT, EncryptionInfo
from archiver.transfer.fan_out import DESTINATION_ERRORS, Member

log = structlog.get_logger(__name__)

# (stack uid, backup id, destination, reason): a destination's failure, for the summary.
FailDestination = Callable[[str, int, str, str], None]


class Committer:
    """Records, finishes and locks each destination's commit (`archiver.transfer.commit`)."""

    def __init__(self, state: StateStore, fail: FailDestination) -> None:
        self._state = state
        self._fail = fail
        # The commits recorded in this pass, by destination name and backup.
        self._pending: dict[tuple[str, str, int], PendingCommit] = {}
        # The copies whose lock was tried in this pass (a failed one is reported once).
        self._lock_tried: set[tuple[str, str, int]] = set()

    def intend(self, member: Member, keys: BackupKeys, manifest: Manifest) -> None:
        """Record the commit of `member`'s copy before its data reaches the final name."""
        destination = member.destination
        pending = commit.intend(
            self._state, BackupKeys(member.key, keys.manifest), manifest, destination.name
        )
        self._pending[(destination.name, pending.stack_uid, pending.backup_id)] = pending

    async def conclude(
        self, member: Member, stack_uid: str, backup_id: int
    ) -> ArchivedBackup | None:
        """Right after `member`'s data commit: finish it when it committed, else take back what
        the failed commit may have left under the final name; the record, or None."""
        if member.committed:
            return await self.finish(member, stack_uid, backup_id)
        await self.abandon([member], stack_uid, backup_id)
        return None

    async def finish(
        self, member: Member, stack_uid: str, backup_id: int
    ) -> ArchivedBackup | None:
        """The manifest beside the committed data, the copy recorded, then locked; None (the
        failure reported, the data taken back) when the manifest could not be written."""
        destination = member.destination
        pending = self._pending.pop((destination.name, stack_uid, backup_id))
        try:
            record = await commit.finish(self._state, destination.storage, pending)
        except DESTINATION_ERRORS as error:
            reason = f"could not write the manifest: {redact(str(error))}"
            self._fail(stack_uid, backup_id, destination.name, reason)
            return None
        log.debug("copy archived", storage=destination.name,
                  location=destination.location(record.tar_key))
        return await self.lock(destination, record)

    async def abandon(self, members: Sequence[Member], stack_uid: str, backup_id: int) -> None:
        """The data commit failed in these destinations: remove what it may have left under
        the final name, and the records."""
        for member in members:
            pending = self._pending.pop((member.destination.name, stack_uid, backup_id), None)
            if pending is not None:
                await asyncio.shield(
                    commit.abandon(self._state, member.destination.storage, pending)
                )

    async def lock(self, destination: Destination, record: ArchivedBackup) -> ArchivedBackup:
        """Lock data and manifest where the destination asks for it; the record as it stands."""
        lock = destination.object_lock
        storage = destination.storage
        if lock is None or not isinstance(storage, Lockable):
            return record
        self._lock_tried.add((destination.name, record.stack_uid, record.backup_id))
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
        """Lock every copy a locking destination holds unlocked (a lock that failed in an
        earlier pass, or copies from before `object_lock` was set); not one whose lock was
        tried in this pass already (its failure is reported once)."""
        for destination in destinations:
            if destination.object_lock is None:
                continue
            for record in self._state.archived.all(destination.name):
                tried = (destination.name, record.stack_uid, record.backup_id) in self._lock_tried
                if record.locked_until is None and not tried:
                    await self.lock(destination, record)


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

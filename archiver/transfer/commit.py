"""A backup's commit in a destination: its data under the final name, then its manifest, never
one without the other (each destination's commit on its own, recorded with its name).

The contract: a backup is archived when its manifest exists, and unfinished data is
never visible under a final name. Between the data commit (the `.part` renamed or
published) and the manifest write there is a moment when the data is final and the
manifest not there yet; this module makes sure it does not outlast the commit:

1. `intend`: before the data reaches its final name, the state records the commit,
   with the manifest that will be written (durable at once).
2. the data is committed (`Upload.commit`), then `finish` writes the manifest and
   records the backup archived, forgetting the pending commit in the same
   transaction.
3. when the manifest cannot be written (a full disk, a refusal, a stop), `finish`
   takes the data back out: the manifest first (its write may have landed), then the
   data, then the record. The backup counts as not archived and is tried again.
4. a crash (kill -9) anywhere in between, or an undo that failed too, leaves the
   record: the next pass `settle`s it before anything else. Data whole under its
   final name gets its manifest (nothing is downloaded again, even if Cloud 66 no
   longer lists the backup); anything else is removed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

from archiver.core.errors import StorageError
from archiver.model.layout import BackupKeys
from archiver.model.manifest import ArchivedBackup, Manifest
from archiver.state.records import PendingCommit
from archiver.state.store import StateStore
from archiver.storage.base import Storage

log = structlog.get_logger(__name__)


def intend(
    state: StateStore, keys: BackupKeys, manifest: Manifest, storage: str = "default"
) -> PendingCommit:
    """Record the commit of a backup whose data is whole, before the data is committed in the
    destination `storage` (`keys.tar`: the data's key there)."""
    pending = PendingCommit(
        manifest.stack_uid, manifest.backup_id, keys.tar, keys.manifest,
        manifest.to_json().decode(), storage,
    )
    state.commits.begin(pending)
    return pending


async def finish(state: StateStore, storage: Storage, pending: PendingCommit) -> ArchivedBackup:
    """Write the manifest beside the committed data and record the backup archived.

    When the manifest cannot be written, the data leaves its final name again and the
    error is raised; when even that fails, the pending record stays for `settle`.
    """
    try:
        await storage.write_small(pending.manifest_key, pending.manifest.encode())
    except BaseException:
        # Shielded: a stop must not cut the undo short (what it cannot do, settle does).
        await asyncio.shield(_quietly(undo(state, storage, pending), pending))
        raise
    record = Manifest.from_json(pending.manifest.encode()).archived_record(
        tar_key=pending.tar_key, manifest_key=pending.manifest_key, storage=pending.storage
    )
    state.archived.record(record)
    return record


async def undo(state: StateStore, storage: Storage, pending: PendingCommit) -> None:
    """Take a commit back: manifest, data, then the records (the order keeps a failure here
    safe: a manifest never outlives its data, and the record outlives both)."""
    await storage.remove(pending.manifest_key)
    await storage.remove(pending.tar_key)
    state.transfers.end(pending.stack_uid, pending.backup_id)  # its upload is gone with it
    state.commits.end(pending.stack_uid, pending.backup_id, pending.storage)
    log.info("an unfinished commit was taken back: its data left the final name",
             backup_id=pending.backup_id, key=pending.tar_key)


async def abandon(state: StateStore, storage: Storage, pending: PendingCommit) -> None:
    """The data commit itself failed: remove what it may have left under the final name
    (a rename done before its fsync failed, an S3 copy done before its cleanup failed),
    then the record. The transfer record stays: the upload may be resumed."""

    async def remove_data() -> None:
        await storage.remove(pending.tar_key)
        state.commits.end(pending.stack_uid, pending.backup_id, pending.storage)

    await _quietly(remove_data(), pending)


async def _quietly(work: Coroutine[Any, Any, None], pending: PendingCommit) -> None:
    """Run a take-back; on storage trouble leave the pending record for `settle`."""
    try:
        await work
    except (StorageError, OSError) as error:
        log.warning(
            "could not take back an unfinished commit; the next pass will",
            backup_id=pending.backup_id, key=pending.tar_key, error=str(error),
        )


async def settle(
    state: StateStore, storage: Storage, name: str = "default"
) -> list[tuple[PendingCommit, StorageError | OSError]]:
    """Finish or clean every commit an earlier pass or process left half done in destination
    `name`; return those that could not be finished, with why. Never raises for storage
    trouble: a commit whose take-back failed too stays recorded for the next pass."""
    unfinished: list[tuple[PendingCommit, StorageError | OSError]] = []
    for pending in state.commits.all(name):
        try:
            await _settle(state, storage, pending)
        except (StorageError, OSError) as error:
            unfinished.append((pending, error))
            log.warning(
                "an interrupted commit could not be finished",
                stack_uid=pending.stack_uid, backup_id=pending.backup_id, error=str(error),
            )
    return unfinished


async def _settle(state: StateStore, storage: Storage, pending: PendingCommit) -> None:
    stored = await storage.stat(pending.tar_key)
    context = {"stack_uid": pending.stack_uid, "backup_id": pending.backup_id}
    if stored is None:  # the data never reached its final name (its upload may resume)
        await storage.remove(pending.manifest_key)
        state.commits.end(pending.stack_uid, pending.backup_id, pending.storage)
        log.info("an interrupted commit had not published its data; nothing to undo", **context)
    elif stored.size != _expected_size(pending):
        await undo(state, storage, pending)
        log.warning("an interrupted commit left data that is not what it recorded: removed",
                    **context, size=stored.size)
    else:
        await finish(state, storage, pending)
        log.info("finished a commit an earlier run left without its manifest", **context)


def _expected_size(pending: PendingCommit) -> int | None:
    """The stored size the pending manifest promises; None when it cannot be read."""
    try:
        return Manifest.from_json(pending.manifest.encode()).expected_stored_size
    except (ValueError, KeyError, TypeError):
        return None

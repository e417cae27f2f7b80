"""What storage already holds, read back into the state: after a lost state, or a crash.

The manifests in storage are the source of truth: a backup is archived when
its manifest exists and the file it names is there; it was pruned when a
tombstone (`pruned.json`) stands beside where its manifest was. A new (or deleted) state
is rebuilt from them before the first pass, and a pass adopts a manifest it
finds for a backup the state does not know, so nothing is downloaded twice.
"""

from __future__ import annotations

import structlog

from archiver.model.backup_identity import identity_of
from archiver.model.layout import MANIFEST_NAME, TOMBSTONE_NAME, sibling_key
from archiver.model.manifest import ArchivedBackup, Manifest, Tombstone
from archiver.state.records import PrunedBackup
from archiver.state.store import StateStore
from archiver.storage.base import Storage

log = structlog.get_logger(__name__)


async def rebuild_from_storage(state: StateStore, storage: Storage) -> int:
    """Record every archived and every pruned backup that storage knows of; return how many
    are archived.

    Tombstones win: a backup with one is pruned, whatever else is left of it (a
    prune interrupted before its manifest or data went; the next prune finishes
    it). Unreadable manifests and manifests whose data is missing are skipped
    with a warning: they are not archived, and the next pass archives them again.
    """
    keys = {key async for key in storage.list()}
    pruned = await _record_tombstones(state, storage, keys)
    recorded = skipped = 0
    for key in sorted(keys):
        if key.rpartition("/")[2] != MANIFEST_NAME or sibling_key(key, TOMBSTONE_NAME) in pruned:
            continue
        record = await record_from_manifest(storage, key)
        if record is None:
            skipped += 1
            continue
        state.archived.record(record)
        recorded += 1
    # An empty storage (a new install) rebuilds nothing: not worth a line at info.
    report = log.info if recorded or skipped or pruned else log.debug
    report("state rebuilt from storage", recorded=recorded, skipped=skipped, pruned=len(pruned))
    return recorded


async def _record_tombstones(state: StateStore, storage: Storage, keys: set[str]) -> set[str]:
    """Record the pruned backup of every readable tombstone; return their keys."""
    found: set[str] = set()
    for key in sorted(keys):
        if key.rpartition("/")[2] != TOMBSTONE_NAME:
            continue
        try:
            tombstone = Tombstone.from_json(await storage.read_small(key))
        except (FileNotFoundError, ValueError, KeyError, TypeError) as error:
            log.warning("unreadable tombstone; ignored", key=key, error=str(error))
            continue
        manifest_key = sibling_key(key, MANIFEST_NAME)
        tar_key = sibling_key(key, tombstone.file) if tombstone.file else manifest_key
        leftovers = manifest_key in keys or tar_key in keys
        state.pruned.record(
            PrunedBackup(
                **identity_of(tombstone), tar_key=tar_key, manifest_key=manifest_key,
                pruned_at=tombstone.pruned_at, complete=not leftovers,
            )
        )
        found.add(key)
    return found


async def record_from_manifest(storage: Storage, key: str) -> ArchivedBackup | None:
    """The state record the manifest at `key` describes, or None when it cannot count.

    None, silently, when there is no manifest; None, with a warning, when it is
    unreadable or the file it names is missing: that backup is not archived, and
    the next pass archives it again.
    """
    try:
        manifest = Manifest.from_json(await storage.read_small(key))
        if not manifest.file or "/" in manifest.file:
            raise ValueError(f"bad file name {manifest.file!r}")
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as error:
        log.warning("unreadable manifest; its backup counts as not archived", key=key,
                    error=str(error))
        return None
    tar_key = sibling_key(key, manifest.file)
    if await storage.stat(tar_key) is None:
        log.warning("manifest without its archive; the backup counts as not archived", key=key,
                    tar_key=tar_key)
        return None
    return manifest.archived_record(
        tar_key=tar_key, manifest_key=key, location=storage.location(tar_key)
    )

"""What a destination already holds, read back into the state: after a lost state, a new
destination, or a crash.

The manifests in storage are the source of truth: a backup is archived in a
destination when its manifest exists there and the file it names is there; it
was pruned from it when a tombstone (`pruned.json`) stands beside where its
manifest was. A destination the state has not read yet (every one, for a new or
deleted state) is read whole before anything uses the state
(`archiver.lifecycle.destinations`), and a pass adopts a manifest it finds for a
copy the state does not know, so nothing is downloaded twice.
"""

from __future__ import annotations

import structlog

from archiver.model.backup_identity import identity_of
from archiver.model.layout import MANIFEST_NAME, TOMBSTONE_NAME, sibling_key
from archiver.model.manifest import ArchivedBackup, Manifest, Tombstone, utc_now_iso
from archiver.state.records import PrunedBackup
from archiver.state.store import StateStore
from archiver.storage.base import Storage

log = structlog.get_logger(__name__)


async def rebuild_from_storage(state: StateStore, storage: Storage, name: str, place: str) -> int:
    """Make the state's copies and prunes of destination `name` (at `place`) exactly what it
    holds; return how many copies.

    Tombstones win: a backup with one is pruned there, whatever else is left of it
    (a prune interrupted before its manifest or data went; the next prune finishes
    it). Unreadable manifests and manifests whose data is missing are skipped
    with a warning: they are not archived there, and a later pass fills them in.
    What the state said of `name` before and storage does not hold is forgotten.
    """
    keys = {key async for key in storage.list()}
    prunes = await _read_tombstones(storage, name, keys)
    pruned_manifests = {prune.manifest_key for prune in prunes}
    copies: list[ArchivedBackup] = []
    skipped = 0
    for key in sorted(keys):
        if key.rpartition("/")[2] != MANIFEST_NAME or key in pruned_manifests:
            continue
        record = await record_from_manifest(storage, key, name)
        if record is None:
            skipped += 1
            continue
        copies.append(record)
    state.destinations.replace(name, place, utc_now_iso(), copies, prunes)
    # An empty storage (a new install) rebuilds nothing: not worth a line at info.
    report = log.info if copies or skipped or prunes else log.debug
    report("state rebuilt from storage", storage=name, recorded=len(copies), skipped=skipped,
           pruned=len(prunes))
    return len(copies)


async def _read_tombstones(storage: Storage, name: str, keys: set[str]) -> list[PrunedBackup]:
    """The pruned copy of every readable tombstone."""
    found: list[PrunedBackup] = []
    for key in sorted(keys):
        if key.rpartition("/")[2] != TOMBSTONE_NAME:
            continue
        try:
            tombstone = Tombstone.from_json(await storage.read_small(key))
        except (FileNotFoundError, ValueError, KeyError, TypeError) as error:
            log.warning("unreadable tombstone; ignored", storage=name, key=key, error=str(error))
            continue
        manifest_key = sibling_key(key, MANIFEST_NAME)
        tar_key = sibling_key(key, tombstone.file) if tombstone.file else manifest_key
        leftovers = manifest_key in keys or tar_key in keys
        found.append(
            PrunedBackup(
                **identity_of(tombstone), tar_key=tar_key, manifest_key=manifest_key,
                pruned_at=tombstone.pruned_at, complete=not leftovers, storage=name,
            )
        )
    return found


async def record_from_manifest(storage: Storage, key: str, name: str) -> ArchivedBackup | None:
    """The state record of the copy the manifest at `key` describes, or None when it cannot count.

    None, silently, when there is no manifest; None, with a warning, when it is
    unreadable or the file it names is missing: that copy is not archived, and
    a later pass makes it again.
    """
    manifest = await read_manifest(storage, key, name)
    if manifest is None:
        return None
    tar_key = sibling_key(key, manifest.file)
    info = await storage.stat(tar_key)
    if info is None:
        log.warning("manifest without its archive; the backup counts as not archived there",
                    storage=name, key=key, tar_key=tar_key)
        return None
    locked_until = info.locked_until.isoformat() if info.locked_until else None
    return manifest.archived_record(
        tar_key=tar_key, manifest_key=key, storage=name, locked_until=locked_until
    )


async def read_manifest(storage: Storage, key: str, name: str) -> Manifest | None:
    """The manifest at `key`, or None: silently when missing, with a warning when unreadable."""
    try:
        manifest = Manifest.from_json(await storage.read_small(key))
        if not manifest.file or "/" in manifest.file:
            raise ValueError(f"bad file name {manifest.file!r}")
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as error:
        log.warning("unreadable manifest; its backup counts as not archived there",
                    storage=name, key=key, error=str(error))
        return None
    return manifest

"""What storage already holds, read back into the state: after a lost state, or a crash.

The manifests in storage are the source of truth: a backup is archived when
its manifest exists and the file it names is there. A new (or deleted) state
is rebuilt from them before the first pass, and a pass adopts a manifest it
finds for a backup the state does not know, so nothing is downloaded twice.
"""

from __future__ import annotations

import structlog

from archiver.layout import MANIFEST_NAME
from archiver.manifest import ArchivedBackup, Manifest
from archiver.state import StateStore
from archiver.storage.base import Storage

log = structlog.get_logger(__name__)


async def rebuild_from_storage(state: StateStore, storage: Storage) -> int:
    """Record every backup whose manifest and tar are in storage; return how many.

    Unreadable manifests and manifests whose tar is missing are skipped with a
    warning: they are not archived, and the next pass archives them again.
    """
    recorded = skipped = 0
    async for key in storage.list():
        if key != MANIFEST_NAME and not key.endswith("/" + MANIFEST_NAME):
            continue
        record = await record_from_manifest(storage, key)
        if record is None:
            skipped += 1
            continue
        state.record_archived(record)
        recorded += 1
    log.info("state rebuilt from manifests", recorded=recorded, skipped=skipped)
    return recorded


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
    folder = key.rpartition("/")[0]
    tar_key = f"{folder}/{manifest.file}" if folder else manifest.file
    if await storage.stat(tar_key) is None:
        log.warning("manifest without its archive; the backup counts as not archived", key=key,
                    tar_key=tar_key)
        return None
    return manifest.archived_record(
        tar_key=tar_key, manifest_key=key, location=storage.location(tar_key)
    )

"""Copies deleted from a destination behind the archiver's back, noticed at a pass's start.

A backup is archived in a destination while its manifest is there (the contract);
the state only remembers that. A pass lists each destination's manifests (one
listing, no object read) and forgets the copies whose manifest is gone, so the
plan sees that destination lacking them and fills them in from another copy, or
from Cloud 66 while it lists the backup. A copy forgotten in error (a listing that
missed a key) costs one manifest read: the plan adopts a manifest it finds.

A listing is cheap on a folder and on S3 (1,000 backups: about 0.1 s and 0.7 s on
loopback), but an SFTP server answers one folder per round trip, so there it runs
at most once a day in a daemon.
"""

from __future__ import annotations

import time

import structlog

from archiver.model.layout import MANIFEST_NAME
from archiver.model.manifest import ArchivedBackup
from archiver.state.store import StateStore
from archiver.storage.destinations import Destination

log = structlog.get_logger(__name__)

SLOW_LISTING_EVERY = 24 * 3600.0  # seconds between listings of a destination slow to list


class VanishedCopies:
    """Remembers, for one process, when each destination was last listed."""

    def __init__(self) -> None:
        self._listed_at: dict[str, float] = {}

    async def forget_vanished(
        self, state: StateStore, destination: Destination
    ) -> list[ArchivedBackup]:
        """Forget the copies the state claims in `destination` whose manifest is gone; return
        them. Storage errors go to the caller (the destination is then unusable this pass)."""
        if not self._due(destination):
            return []
        copies = state.archived.all(destination.name)
        if not copies:
            return []
        present = {key async for key in destination.storage.list() if _is_manifest(key)}
        self._listed_at[destination.name] = time.monotonic()
        gone = [copy for copy in copies if copy.manifest_key not in present]
        for copy in gone:
            state.archived.forget(copy.stack_uid, copy.backup_id, copy.storage)
            log.warning("a copy is gone from its destination; it is filled in again",
                        stack_uid=copy.stack_uid, backup_id=copy.backup_id,
                        storage=copy.storage)
        return gone

    def _due(self, destination: Destination) -> bool:
        if destination.settings.type != "sftp":
            return True
        last = self._listed_at.get(destination.name)
        return last is None or time.monotonic() - last >= SLOW_LISTING_EVERY


def _is_manifest(key: str) -> bool:
    return key == MANIFEST_NAME or key.endswith(f"/{MANIFEST_NAME}")

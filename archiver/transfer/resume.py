"""Transfers under way, remembered so that a later pass (or process) can resume them.

A pass records each transfer it starts and, as each part's first answer comes,
that part's size, ETag and expected MD5 (`archiver.state.store`, durable at once).
Next time the backup is due, those facts tell `archiver.transfer.join` which bytes of
the unfinished upload belong to which part, so it reads them back, hashes them
again and downloads only the rest. Encrypted transfers are not recorded: they
cannot be resumed. Each pass keeps the unfinished uploads of backups it is
about to archive and removes every other one, in every destination.
"""

from __future__ import annotations

from collections.abc import Collection

import structlog

from archiver.model.manifest import utc_now_iso
from archiver.state.records import TransferPart
from archiver.state.store import StateStore
from archiver.storage.base import Storage
from archiver.transfer.download import PartFacts
from archiver.transfer.join import KnownPart, PartFactsCallback

log = structlog.get_logger(__name__)


def resume_or_begin(
    state: StateStore, stack_uid: str, backup_id: int, tar_key: str
) -> list[KnownPart]:
    """The parts an earlier transfer of this backup recorded, to resume; else none, and the
    transfer is recorded as begun."""
    earlier = state.transfers.get(stack_uid, backup_id)
    if earlier is not None and earlier.tar_key == tar_key and earlier.parts:
        return [
            KnownPart(part.id, PartFacts(part.size, part.etag, part.md5)) for part in earlier.parts
        ]
    state.transfers.begin(stack_uid, backup_id, tar_key, utc_now_iso())
    return []


def recorder(state: StateStore, stack_uid: str, backup_id: int) -> PartFactsCallback:
    """The callback that records each part's facts for the transfer of this backup."""

    def record(index: int, part_id: str, facts: PartFacts) -> None:
        part = TransferPart(part_id, facts.size or 0, facts.etag, facts.md5)
        state.transfers.note_part(stack_uid, backup_id, index, part)

    return record


def forget_not_due(state: StateStore, due: Collection[tuple[str, int]]) -> list[str]:
    """Forget transfers of backups not due now; return the keys of those kept (to resume)."""
    kept = []
    for transfer in state.transfers.all():
        if (transfer.stack_uid, transfer.backup_id) in due:
            kept.append(transfer.tar_key)
        else:
            state.transfers.end(transfer.stack_uid, transfer.backup_id)
    return kept


async def remove_unfinished(storage: Storage, kept: Collection[str], name: str) -> None:
    """Remove every unfinished upload in one destination but those of the `kept` keys (what
    an earlier pass or a crashed process left) and what a live `check-config` or `import`
    writes beside this pass (`Storage.remove_incomplete`)."""
    removed = await storage.remove_incomplete(keep=kept)
    if removed or kept:
        log.info("unfinished uploads", storage=name, removed=removed, kept_to_resume=len(kept))


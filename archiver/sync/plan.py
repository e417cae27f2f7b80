"""What a pass has to do: per backup, which destinations lack it and which hold a copy.

A backup Cloud 66 lists is due in every destination that neither holds it nor
pruned it. A backup Cloud 66 no longer lists (rotated away, deleted) is due in
a destination only when another destination holds a copy to fill it in from.
What a destination pruned is never due there again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from archiver.cloud66.models import Backup
from archiver.model.layout import ENCRYPTED_SUFFIX, BackupKeys, backup_keys
from archiver.model.manifest import ArchivedBackup
from archiver.state.store import StateStore
from archiver.storage.destinations import Destination


@dataclass(frozen=True, eq=False)
class Job:
    """A backup that some destinations lack, and where copies of it are (compared by identity:
    a job is one backup's work in one pass)."""

    stack_uid: str
    backup_id: int
    keys: BackupKeys  # the plaintext keys (a destination that encrypts adds `.age`)
    missing: tuple[Destination, ...]
    holders: tuple[Destination, ...]
    backup: Backup | None = None  # as Cloud 66 lists it now; None when it no longer does
    db_type: str | None = None

    @property
    def label(self) -> str:
        """How the progress display names it."""
        return f"{self.stack_uid[:8]} #{self.backup_id}"


@dataclass
class StackPlan:
    """What one stack's listing means for the destinations."""

    jobs: list[Job]
    already: int  # listed backups every usable destination holds (or pruned)
    not_ok: list[Backup]  # listed backups that failed upstream and are held nowhere


class Planner:
    """Works out the jobs of one stack from its listing and the state."""

    def __init__(self, state: StateStore, destinations: Sequence[Destination]) -> None:
        self._state = state
        self._destinations = list(destinations)

    def plan_stack(self, stack_uid: str, backups: Sequence[Backup] | None) -> StackPlan:
        """The jobs of a stack; `backups` None when its listing failed (then nothing is planned:
        what is listed is unknown, so a download or a report could be wrong)."""
        plan = StackPlan([], 0, [])
        if backups is None:
            return plan
        holders = self._state.archived.holders(stack_uid)
        pruned = self._state.pruned.pruned_from(stack_uid)
        for backup in backups:
            held = holders.get(backup.id, set())
            missing = self._missing(held, pruned.get(backup.id, set()))
            if not missing:
                plan.already += 1 if held else 0
            elif not held and not backup.is_ok:
                plan.not_ok.append(backup)
            elif backup.is_ok or held:
                keys = listed_keys(stack_uid, backup)
                job = self._job(stack_uid, backup.id, keys, missing, held, backup)
                plan.jobs.append(dataclasses.replace(job, db_type=backup.db_type))
        listed = {backup.id for backup in backups}
        plan.jobs.extend(self._unlisted(stack_uid, listed, holders, pruned))
        return plan

    def _unlisted(
        self,
        stack_uid: str,
        listed: set[int],
        holders: dict[int, set[str]],
        pruned: dict[int, set[str]],
    ) -> list[Job]:
        """Backups Cloud 66 no longer lists that a destination holds and another lacks."""
        jobs = []
        usable = {destination.name for destination in self._destinations}
        copies = {r.backup_id: r for r in self._state.archived.all(stack_uid=stack_uid)}
        for backup_id, held in sorted(holders.items()):
            missing = self._missing(held, pruned.get(backup_id, set()))
            # Filled in only from a copy that can be read now (a destination down this pass
            # is not a source).
            if backup_id in listed or not missing or not held & usable:
                continue
            keys = held_keys(copies[backup_id])
            job = self._job(stack_uid, backup_id, keys, missing, held, None)
            jobs.append(dataclasses.replace(job, db_type=copies[backup_id].db_type))
        return jobs

    def _missing(self, held: set[str], pruned: set[str]) -> list[Destination]:
        return [d for d in self._destinations if d.name not in held and d.name not in pruned]

    def _job(
        self,
        stack_uid: str,
        backup_id: int,
        keys: BackupKeys,
        missing: list[Destination],
        held: set[str],
        backup: Backup | None,
    ) -> Job:
        holders = tuple(d for d in self._destinations if d.name in held)
        return Job(stack_uid, backup_id, keys, tuple(missing), holders, backup)


def listed_keys(stack_uid: str, backup: Backup) -> BackupKeys:
    """The plaintext keys of a backup Cloud 66 lists."""
    return backup_keys(
        stack_uid=stack_uid,
        db_type=backup.db_type,
        database_name=backup.database_name,
        backup_date=backup.backup_date_iso,
        backup_id=backup.id,
    )


def held_keys(record: ArchivedBackup) -> BackupKeys:
    """The plaintext keys of a backup from one of its copies (the layout is the same in
    every destination)."""
    plain = record.tar_key.removesuffix(ENCRYPTED_SUFFIX)
    return BackupKeys(tar=plain, manifest=record.manifest_key)

"""Retention carried out on the archive: decide per series, then remove, crash-safe.

`plan_prune` applies each stack's policy (`archiver.model.retention`, restic's
`forget` rules) to every series (stack, db_type, database) the state holds.
`Pruner` removes what the plan says, one backup at a time, in an order where
every step is safe to repeat and a kill -9 anywhere leaves no backup that is
listed but half-gone:

1. the state records the backup as pruned (unfinished) and no longer archived:
   from here on no pass downloads it again;
2. a tombstone (`pruned.json`) is written beside the manifest, so a state
   rebuilt from storage remembers the prune too;
3. the manifest goes: the backup is no longer archived in storage (a backup is
   archived exactly when its manifest exists);
4. the data goes;
5. the state marks the prune complete.

Manifest before data: a crash between them leaves data without a manifest
(listed nowhere; the next prune removes it), never a manifest without its data.
Every prune first finishes the unfinished ones.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from archiver.config.settings import Settings, policy_for
from archiver.core.errors import StorageError
from archiver.core.secrets import redact
from archiver.model.backup_identity import identity_of
from archiver.model.layout import TOMBSTONE_NAME, sibling_key
from archiver.model.manifest import ArchivedBackup, Tombstone, utc_now_iso
from archiver.model.retention import decide
from archiver.model.summary import Failure
from archiver.state.records import PrunedBackup
from archiver.state.store import StateStore
from archiver.storage.base import Storage

log = structlog.get_logger(__name__)

NO_POLICY = "no retention policy"


@dataclass(frozen=True)
class Verdict:
    """One archived backup and the rules that keep it (none: it is removed)."""

    record: ArchivedBackup
    reasons: tuple[str, ...]
    policy: str

    @property
    def keep(self) -> bool:
        """True when some rule keeps the backup."""
        return bool(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        """The contract's `prune --json` entry."""
        entry: dict[str, Any] = dict(identity_of(self.record))
        if self.keep:
            entry["reasons"] = list(self.reasons)
        return entry


@dataclass
class PrunePlan:
    """What to keep and what to remove, series by series, newest first."""

    keep: list[Verdict] = field(default_factory=list)
    remove: list[Verdict] = field(default_factory=list)

    def as_json(self, *, dry_run: bool) -> dict[str, Any]:
        """The contract's `prune --json` object."""
        return {
            "dry_run": dry_run,
            "keep": [verdict.as_dict() for verdict in self.keep],
            "remove": [verdict.as_dict() for verdict in self.remove],
        }


def plan_prune(settings: Settings, records: list[ArchivedBackup]) -> PrunePlan:
    """Apply each stack's policy to each of its series; stacks without one keep everything."""
    plan = PrunePlan()
    for series in _series(records).values():
        policy = policy_for(settings, series[0].stack_uid)
        if policy is None:
            plan.keep.extend(Verdict(record, (NO_POLICY,), NO_POLICY) for record in series)
            continue
        for decision in decide(series, _moment, policy):
            verdict = Verdict(decision.item, decision.reasons, policy.describe())
            (plan.keep if verdict.keep else plan.remove).append(verdict)
    return plan


def _series(records: list[ArchivedBackup]) -> dict[tuple[str, str, str], list[ArchivedBackup]]:
    """Records grouped by (stack, db_type, database), each newest id first (the tie-break)."""
    groups: dict[tuple[str, str, str], list[ArchivedBackup]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r.backup_id, reverse=True):
        groups[(record.stack_uid, record.db_type, record.database_name)].append(record)
    return dict(sorted(groups.items()))


def _moment(record: ArchivedBackup) -> datetime | None:
    if not record.backup_date:
        return None
    try:
        return datetime.fromisoformat(record.backup_date)
    except ValueError:
        return None  # an unreadable date is treated as none: such a backup is kept


class Pruner:
    """Removes what a plan says, in the crash-safe order of this module's docstring."""

    def __init__(self, state: StateStore, storage: Storage) -> None:
        self._state = state
        self._storage = storage

    async def carry_out(self, plan: PrunePlan) -> list[Failure]:
        """Finish interrupted prunes, then remove the plan's backups; return what failed."""
        failures: list[Failure] = []
        for pruned in self._state.pruned.unfinished():
            await self._finish_guarded(pruned, "", failures)
        for verdict in plan.remove:
            pruned = self._start(verdict)
            await self._finish_guarded(pruned, verdict.policy, failures)
        return failures

    def _start(self, verdict: Verdict) -> PrunedBackup:
        record = verdict.record
        pruned = PrunedBackup(
            **identity_of(record), tar_key=record.tar_key, manifest_key=record.manifest_key,
            pruned_at=utc_now_iso(), complete=False,
        )
        self._state.pruned.record(pruned)
        return pruned

    async def _finish_guarded(
        self, pruned: PrunedBackup, policy: str, failures: list[Failure]
    ) -> None:
        try:
            await self._finish(pruned, policy)
        except (StorageError, OSError) as error:
            reason = f"prune: could not remove {pruned.manifest_key}: {redact(str(error))}"
            failures.append(Failure(pruned.stack_uid, pruned.backup_id, reason))
            log.error("could not prune", stack_uid=pruned.stack_uid,
                      backup_id=pruned.backup_id, reason=reason)

    async def _finish(self, pruned: PrunedBackup, policy: str) -> None:
        """Steps 2 to 5: tombstone, manifest, data, done. Each is safe to repeat."""
        tombstone_key = sibling_key(pruned.manifest_key, TOMBSTONE_NAME)
        # A tombstone found when finishing an interrupted prune already says it all.
        if policy or await self._storage.stat(tombstone_key) is None:
            await self._storage.write_small(tombstone_key, _tombstone(pruned, policy).to_json())
        await self._storage.remove(pruned.manifest_key)
        await self._storage.remove(pruned.tar_key)
        self._state.pruned.record(dataclasses.replace(pruned, complete=True))
        log.info("backup pruned", stack_uid=pruned.stack_uid, backup_id=pruned.backup_id,
                 location=self._storage.location(pruned.tar_key))


def _tombstone(pruned: PrunedBackup, policy: str) -> Tombstone:
    return Tombstone(
        **identity_of(pruned),
        pruned_at=pruned.pruned_at,
        policy=policy,
        file=pruned.tar_key.rpartition("/")[2],
    )

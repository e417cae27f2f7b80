"""Retention carried out on each destination: decide per series, then remove, crash-safe.

`plan_prune` applies each stack's policy in a destination (`archiver.model.retention`,
restic's `forget` rules; `[retention]`, then the stack's override, then the
destination's, key by key) to every series (stack, db_type, database) of the
copies that destination holds. `Pruner` removes what the plan says from that
destination, one backup at a time, in an order where every step is safe to
repeat and a kill -9 anywhere leaves no copy that is listed but half-gone:

1. the state records the copy as pruned (unfinished) and no longer archived
   there: from here on no pass fills it in there again;
2. a tombstone (`pruned.json`) is written beside the manifest, so a state
   rebuilt from storage remembers the prune too;
3. the manifest goes: the backup is no longer archived there (a backup is
   archived exactly when its manifest exists);
4. the data goes;
5. the state marks the prune complete.

Manifest before data: a crash between them leaves data without a manifest
(listed nowhere; the next prune removes it), never a manifest without its data.
Every prune first finishes the unfinished ones.

A destination with S3 Object Lock: a copy still under lock (data or manifest) is
left in place, before step 1, and listed with its `locked_until`; it goes in a
prune after that date.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from archiver.core.errors import ObjectLocked, StorageError
from archiver.core.secrets import redact
from archiver.model.backup_identity import identity_of
from archiver.model.layout import TOMBSTONE_NAME, sibling_key
from archiver.model.manifest import ArchivedBackup, Tombstone, utc_now_iso
from archiver.model.retention import RetentionPolicy, decide
from archiver.model.summary import Failure
from archiver.state.records import PrunedBackup
from archiver.state.store import StateStore
from archiver.storage.destinations import Destination

log = structlog.get_logger(__name__)

NO_POLICY = "no retention policy"
# A stack's policy in the destination being planned; None keeps everything.
PolicyOf = Callable[[str], RetentionPolicy | None]


@dataclass(frozen=True)
class Verdict:
    """One archived copy and the rules that keep it (none: it is removed, unless locked)."""

    record: ArchivedBackup
    reasons: tuple[str, ...]
    policy: str
    locked_until: str | None = None  # S3 Object Lock keeps it until then: left in place

    @property
    def keep(self) -> bool:
        """True when some rule keeps the copy."""
        return bool(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        """The contract's `prune --json` entry."""
        entry: dict[str, Any] = {**identity_of(self.record), "storage": self.record.storage}
        if self.keep:
            entry["reasons"] = list(self.reasons)
        else:
            entry["locked_until"] = self.locked_until
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

    def extend(self, other: PrunePlan) -> None:
        """Add another destination's plan."""
        self.keep.extend(other.keep)
        self.remove.extend(other.remove)

    @property
    def locked(self) -> list[Verdict]:
        """What the rules remove but a lock keeps in place."""
        return [verdict for verdict in self.remove if verdict.locked_until is not None]


@dataclass
class PruneOutcome:
    """What carrying out a plan did."""

    removed: int = 0
    failures: list[Failure] = field(default_factory=list)


def plan_prune(policy_of: PolicyOf, records: list[ArchivedBackup]) -> PrunePlan:
    """Apply each stack's policy to each of its series (the copies of one destination);
    stacks without one keep everything."""
    plan = PrunePlan()
    for series in _series(records).values():
        policy = policy_of(series[0].stack_uid)
        if policy is None:
            plan.keep.extend(Verdict(record, (NO_POLICY,), NO_POLICY) for record in series)
            continue
        for decision in decide(series, _moment, policy):
            verdict = Verdict(decision.item, decision.reasons, policy.describe())
            (plan.keep if verdict.keep else plan.remove).append(verdict)
    return plan


async def with_locks(plan: PrunePlan, destination: Destination) -> PrunePlan:
    """The plan with each copy to remove that Object Lock still keeps marked `locked_until`
    (asked of the storage: a lock may have been set or extended since the state noted it)."""
    if destination.object_lock is None:
        return plan
    now = datetime.now(UTC)
    remove = []
    for verdict in plan.remove:
        record = verdict.record
        dates = []
        for key in (record.tar_key, record.manifest_key):
            info = await destination.storage.stat(key)
            if info is not None and info.locked_until is not None and info.locked_until > now:
                dates.append(info.locked_until)
        until = max(dates).isoformat() if dates else None
        remove.append(dataclasses.replace(verdict, locked_until=until))
    return PrunePlan(plan.keep, remove)


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
    """Removes what a plan says from one destination, in the crash-safe order above."""

    def __init__(self, state: StateStore, destination: Destination) -> None:
        self._state = state
        self._destination = destination
        self._storage = destination.storage

    async def carry_out(self, plan: PrunePlan, *, locks_checked: bool = False) -> PruneOutcome:
        """Finish interrupted prunes, then remove the plan's unlocked copies (`locks_checked`:
        the plan came from `with_locks` already)."""
        outcome = PruneOutcome()
        for pruned in self._state.pruned.unfinished(self._destination.name):
            await self._finish_guarded(pruned, "", outcome)
        checked = plan if locks_checked else await with_locks(plan, self._destination)
        for verdict in checked.remove:
            if verdict.locked_until is not None:
                log.info("left in place: under S3 Object Lock", storage=self._destination.name,
                         backup_id=verdict.record.backup_id, locked_until=verdict.locked_until)
                continue
            pruned = self._start(verdict)
            if await self._finish_guarded(pruned, verdict.policy, outcome):
                outcome.removed += 1
        return outcome

    def _start(self, verdict: Verdict) -> PrunedBackup:
        record = verdict.record
        pruned = PrunedBackup(
            **identity_of(record), tar_key=record.tar_key, manifest_key=record.manifest_key,
            pruned_at=utc_now_iso(), complete=False, storage=self._destination.name,
        )
        self._state.pruned.record(pruned)
        return pruned

    async def _finish_guarded(
        self, pruned: PrunedBackup, policy: str, outcome: PruneOutcome
    ) -> bool:
        try:
            await self._finish(pruned, policy)
        except (StorageError, OSError) as error:
            what = "is under S3 Object Lock" if isinstance(error, ObjectLocked) else "failed"
            reason = (f"prune: removing {pruned.manifest_key} from {pruned.storage!r} {what}: "
                      f"{redact(str(error))}")
            outcome.failures.append(
                Failure(pruned.stack_uid, pruned.backup_id, reason, pruned.storage)
            )
            log.error("could not prune", stack_uid=pruned.stack_uid,
                      backup_id=pruned.backup_id, storage=pruned.storage, reason=reason)
            return False
        return True

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
                 storage=pruned.storage, location=self._destination.location(pruned.tar_key))


def _tombstone(pruned: PrunedBackup, policy: str) -> Tombstone:
    return Tombstone(
        **identity_of(pruned),
        pruned_at=pruned.pruned_at,
        policy=policy,
        file=pruned.tar_key.rpartition("/")[2],
    )

"""The `status --json` document: what is archived where, the last pass and verify, per-stack
freshness, per-destination totals, and the watch's findings.

Built here, below the commands, because the `status` command prints it and the
HTTP server serves it (and the status page draws from it). It is a contract:
fields are only ever added (`stacks` came with the service issue, `watch` and
the stacks' names with the watch, `copies` and `storage` with several
destinations), never removed.

Locations are computed from the destinations' settings when the document is
built (the state keeps keys relative to each destination's root), so a moved
archive is named where it is now. Copies in destinations no longer configured
are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from archiver.config.destinations import StorageSettings
from archiver.model.backup_identity import identity_of
from archiver.model.manifest import ArchivedBackup
from archiver.state.records import RunRecord, Verification, VerifyRun
from archiver.state.store import StateStore
from archiver.storage import describe_storage, location_of
from archiver.watch.messages import SECTIONS

Checks = dict[tuple[str, int, str], Verification]


def status_document(
    state: StateStore,
    *,
    destinations: Sequence[StorageSettings],
    configured: Iterable[str] = (),
    now: datetime | None = None,
) -> dict[str, Any]:
    """The contract's `status --json` object, plus per-stack and per-destination summaries."""
    names = [destination.name for destination in destinations]
    copies = [record for record in state.archived.all() if record.storage in names]
    backups = _by_backup(copies, names)
    archived = [backups[key][0] for key in sorted(backups, key=lambda k: _order(backups[k][0]))]
    checks = state.verifications.latest()
    last_run = _run_entry(state.runs.last())
    stacks = _stack_entries(
        archived,
        state.runs.stack_successes(),
        last_run["failed"] if last_run else [],
        configured,
        now or datetime.now(UTC),
    )
    stack_names = state.stack_names.names()
    for stack in stacks:
        stack.update(_verify_summary(stack["stack_uid"], copies, checks))
        stack["stack_name"] = stack_names.get(stack["stack_uid"])
        stack["destinations"] = _held_per_destination(stack["stack_uid"], copies, names)
    by_name = {destination.name: destination for destination in destinations}
    return {
        "archived": [_archived_entry(backups[_key(r)], checks, by_name) for r in archived],
        "last_run": last_run,
        "stacks": stacks,
        "last_verify": _verify_run_entry(state.verifications.last_run()),
        "pruned": state.pruned.count(),
        "storage": _storage_entries(destinations, backups, state.pruned.keys()),
        "watch": watch_document(state),
    }


def watch_document(state: StateStore | None) -> dict[str, list[dict[str, Any]]]:
    """The contract's `watch` object: each kind's findings that hold (empty lists without
    a state). Entries add the stack's name and when the finding was noticed."""
    sections: dict[str, list[dict[str, Any]]] = {section: [] for section in SECTIONS.values()}
    if state is None:
        return sections
    names = state.stack_names.names()
    for finding in state.findings.current():
        entry = {"stack_uid": finding.stack_uid, "stack_name": names.get(finding.stack_uid)}
        entry.update(finding.details)
        entry["noticed_at"] = finding.noticed_at
        sections[SECTIONS[finding.kind]].append(entry)
    for entries in sections.values():
        entries.sort(key=lambda entry: (entry["stack_uid"], entry.get("db_type") or "",
                                        entry.get("database_name") or "",
                                        entry.get("backup_id") or 0))
    return sections


def _key(record: ArchivedBackup) -> tuple[str, int]:
    return record.stack_uid, record.backup_id


def _order(record: ArchivedBackup) -> tuple[str, str, int]:
    return record.stack_uid, record.backup_date or "", record.backup_id


def _by_backup(
    copies: list[ArchivedBackup], names: list[str]
) -> dict[tuple[str, int], list[ArchivedBackup]]:
    """(stack, backup id) -> its copies, in the destinations' configured order."""
    backups: dict[tuple[str, int], list[ArchivedBackup]] = {}
    for record in copies:
        backups.setdefault(_key(record), []).append(record)
    for held in backups.values():
        held.sort(key=lambda record: names.index(record.storage))
    return backups


def _archived_entry(
    copies: list[ArchivedBackup], checks: Checks, destinations: dict[str, StorageSettings]
) -> dict[str, Any]:
    first = copies[0]
    mine = [c for r in copies if (c := checks.get((r.stack_uid, r.backup_id, r.storage)))]
    failed = [check for check in mine if not check.ok]
    return {
        **identity_of(first),
        "size": first.size,
        "sha256": first.sha256,
        "location": location_of(destinations[first.storage], first.tar_key),
        "archived_at": min(record.archived_at for record in copies),
        "copies": [_copy_entry(record, checks, destinations) for record in copies],
        "verified_at": max((check.verified_at for check in mine), default=None),
        "verify_ok": (not failed) if mine else None,
        "verify_problem": "; ".join(f"{c.storage}: {c.problem}" for c in failed) or None,
    }


def _copy_entry(
    record: ArchivedBackup, checks: Checks, destinations: dict[str, StorageSettings]
) -> dict[str, Any]:
    check = checks.get((record.stack_uid, record.backup_id, record.storage))
    return {
        "storage": record.storage,
        "location": location_of(destinations[record.storage], record.tar_key),
        "archived_at": record.archived_at,
        "locked_until": record.locked_until,
        "verify_ok": check.ok if check else None,
    }


def _held_per_destination(
    stack_uid: str, copies: list[ArchivedBackup], names: list[str]
) -> dict[str, int]:
    """How many of the stack's backups each destination holds."""
    held = dict.fromkeys(names, 0)
    for record in copies:
        if record.stack_uid == stack_uid:
            held[record.storage] += 1
    return held


def _storage_entries(
    destinations: Sequence[StorageSettings],
    backups: dict[tuple[str, int], list[ArchivedBackup]],
    pruned: set[tuple[str, int, str]],
) -> list[dict[str, Any]]:
    """Per destination: what it holds, and how many backups other destinations hold that it
    lacks (and did not prune): those a later pass fills in."""
    entries = []
    for destination in destinations:
        name = destination.name
        held = [r for copies in backups.values() for r in copies if r.storage == name]
        missing = sum(
            1
            for (stack_uid, backup_id), copies in backups.items()
            if all(r.storage != name for r in copies) and (stack_uid, backup_id, name) not in pruned
        )
        entries.append({
            "name": name,
            "type": destination.type,
            "location": describe_storage(destination),
            "backups": len(held),
            "bytes": sum(record.size for record in held),
            "missing": missing,
            "object_lock": getattr(destination, "object_lock", None) is not None,
        })
    return entries


def _verify_summary(
    stack_uid: str, copies: list[ArchivedBackup], checks: Checks
) -> dict[str, Any]:
    """When the stack's copies were last checked, and how many failed their last check."""
    mine = [
        check
        for record in copies
        if record.stack_uid == stack_uid
        and (check := checks.get((record.stack_uid, record.backup_id, record.storage)))
        is not None
    ]
    return {
        "last_verified_at": max((check.verified_at for check in mine), default=None),
        "corrupt": sum(1 for check in mine if not check.ok),
    }


def _verify_run_entry(run: VerifyRun | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {"finished_at": run.finished_at, "checked": run.checked, "failed": run.failed}


def _run_entry(run: RunRecord | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "ok": run.ok,
        "archived": run.archived,
        "skipped": run.skipped,
        "bytes": run.bytes,
        "failed": run.failed,
    }


def _stack_entries(
    archived: list[ArchivedBackup],
    successes: dict[str, datetime],
    failures: list[dict[str, Any]],
    configured: Iterable[str],
    now: datetime,
) -> list[dict[str, Any]]:
    """One entry per stack that is configured, archived, or failed in the last pass."""
    by_stack: dict[str, list[ArchivedBackup]] = {uid: [] for uid in configured}
    for record in archived:
        by_stack.setdefault(record.stack_uid, []).append(record)
    for failure in failures:
        if failure["stack_uid"] != "*":  # "*": the storage failed, not one stack
            by_stack.setdefault(str(failure["stack_uid"]), [])
    return [
        _stack_entry(uid, records, successes.get(uid), failures, now)
        for uid, records in sorted(by_stack.items())
    ]


def _stack_entry(
    stack_uid: str,
    records: list[ArchivedBackup],
    last_success: datetime | None,
    failures: list[dict[str, Any]],
    now: datetime,
) -> dict[str, Any]:
    newest = max(records, key=_backup_moment, default=None)
    return {
        "stack_uid": stack_uid,
        "archived_count": len(records),
        "archived_bytes": sum(record.size for record in records),
        "last_backup": _last_backup(newest),
        "last_backup_age_seconds": (
            round((now - _backup_moment(newest)).total_seconds()) if newest else None
        ),
        "last_success_at": last_success.isoformat() if last_success else None,
        "failures": [f for f in failures if f["stack_uid"] in (stack_uid, "*")],
    }


def _backup_moment(record: ArchivedBackup) -> datetime:
    """When the backup was taken (upstream's date), else when we archived it."""
    moment = datetime.fromisoformat(record.backup_date or record.archived_at)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _last_backup(record: ArchivedBackup | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "backup_id": record.backup_id,
        "db_type": record.db_type,
        "database_name": record.database_name,
        "backup_date": record.backup_date,
        "archived_at": record.archived_at,
    }

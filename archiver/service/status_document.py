"""The `status --json` document: what is archived, the last pass and verify, per-stack freshness,
and the watch's findings.

Built here, below the commands, because the `status` command prints it and the
HTTP server serves it (and the status page draws from it). It is a contract:
fields are only ever added (`stacks` came with the service issue, `watch` and
the stacks' names with the watch), never removed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from archiver.model.backup_identity import identity_of
from archiver.model.manifest import ArchivedBackup
from archiver.state.records import RunRecord, Verification, VerifyRun
from archiver.state.store import StateStore
from archiver.watch.messages import SECTIONS


def status_document(
    state: StateStore, *, configured: Iterable[str] = (), now: datetime | None = None
) -> dict[str, Any]:
    """The contract's `status --json` object, plus a per-stack summary."""
    archived = state.archived.all()
    checks = state.verifications.latest()
    last_run = _run_entry(state.runs.last())
    stacks = _stack_entries(
        archived,
        state.runs.stack_successes(),
        last_run["failed"] if last_run else [],
        configured,
        now or datetime.now(UTC),
    )
    names = state.stack_names.names()
    for stack in stacks:
        stack.update(_verify_summary(stack["stack_uid"], archived, checks))
        stack["stack_name"] = names.get(stack["stack_uid"])
    return {
        "archived": [_archived_entry(record, checks) for record in archived],
        "last_run": last_run,
        "stacks": stacks,
        "last_verify": _verify_run_entry(state.verifications.last_run()),
        "pruned": state.pruned.count(),
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


def _archived_entry(
    record: ArchivedBackup, checks: dict[tuple[str, int], Verification]
) -> dict[str, Any]:
    check = checks.get((record.stack_uid, record.backup_id))
    return {
        **identity_of(record),
        "size": record.size,
        "sha256": record.sha256,
        "location": record.location,
        "archived_at": record.archived_at,
        "verified_at": check.verified_at if check else None,
        "verify_ok": check.ok if check else None,
        "verify_problem": check.problem if check else None,
    }


def _verify_summary(
    stack_uid: str, archived: list[ArchivedBackup], checks: dict[tuple[str, int], Verification]
) -> dict[str, Any]:
    """When the stack's backups were last checked, and how many failed their last check."""
    mine = [
        check
        for record in archived
        if record.stack_uid == stack_uid
        and (check := checks.get((record.stack_uid, record.backup_id))) is not None
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

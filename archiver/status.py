"""`c66-archiver status`: per stack what is archived and how fresh; the last pass's failures.

`status --json` is a contract: fields are only ever added (`stacks` came with
the service issue), never removed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from archiver.config import Settings
from archiver.manifest import ArchivedBackup
from archiver.schedule import max_age_for
from archiver.state import RunRecord, StateStore, Verification, VerifyRun
from archiver.units import human_bytes, human_duration


def status_document(
    state: StateStore, *, configured: Iterable[str] = (), now: datetime | None = None
) -> dict[str, Any]:
    """The contract's `status --json` object, plus a per-stack summary."""
    archived = state.archived()
    checks = state.verifications()
    last_run = _run_entry(state.last_run())
    stacks = _stack_entries(
        archived,
        state.stack_successes(),
        last_run["failed"] if last_run else [],
        configured,
        now or datetime.now(UTC),
    )
    for stack in stacks:
        stack.update(_verify_summary(stack["stack_uid"], archived, checks))
    return {
        "archived": [_archived_entry(record, checks) for record in archived],
        "last_run": last_run,
        "stacks": stacks,
        "last_verify": _verify_run_entry(state.last_verify_run()),
        "pruned": state.pruned_count(),
    }


def _archived_entry(
    record: ArchivedBackup, checks: dict[tuple[str, int], Verification]
) -> dict[str, Any]:
    check = checks.get((record.stack_uid, record.backup_id))
    return {
        "stack_uid": record.stack_uid,
        "backup_id": record.backup_id,
        "db_type": record.db_type,
        "database_name": record.database_name,
        "backup_date": record.backup_date,
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


async def print_status(
    settings: Settings,
    *,
    as_json: bool,
    show_all: bool = False,
    console: Console | None = None,
) -> int:
    """Print the status as tables or JSON; exit 0."""
    state = StateStore.open(settings.state.path)
    try:
        document = status_document(state, configured=[stack.uid for stack in settings.stacks])
    finally:
        state.close()
    if as_json:
        print(json.dumps(document, indent=2))
    else:
        render_status(document, console or _console(), max_age=max_age_for(settings), all=show_all)
    return 0


def _console() -> Console:
    """A terminal's width on a terminal; wide when piped, so scripts get whole lines."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def render_status(
    document: dict[str, Any], console: Console, *, max_age: timedelta, all: bool = False
) -> None:
    """Per-stack summary, optionally every archived backup, then the last pass and failures."""
    console.print(_stacks_table(document["stacks"], max_age))
    if all:
        console.print(_backups_table(document["archived"]))
    _print_last_run(document["last_run"], console)
    _print_last_verify(document["last_verify"], document["archived"], console)


def _stacks_table(stacks: list[dict[str, Any]], max_age: timedelta) -> Table:
    table = Table(
        title="Stacks", caption=f"stale: last success older than {human_duration(max_age)}"
    )
    # Stack uids are folded, never cut: an operator copies them into commands.
    table.add_column("stack", overflow="fold")
    table.add_column("last backup")
    for column in ("age", "backups", "size"):
        table.add_column(column, justify="right")
    table.add_column("last success")
    table.add_column("failed", justify="right")
    table.add_column("verified")
    now = datetime.now(UTC)
    for stack in stacks:
        last = stack["last_backup"]
        age = stack["last_backup_age_seconds"]
        table.add_row(
            stack["stack_uid"],
            _last_backup_cell(last),
            human_duration(timedelta(seconds=age)) if age is not None else "-",
            str(stack["archived_count"]),
            human_bytes(stack["archived_bytes"]),
            _freshness(stack["last_success_at"], now, max_age),
            _failure_count(len(stack["failures"])),
            _verified_cell(stack, now),
        )
    return table


def _last_backup_cell(last: dict[str, Any] | None) -> str:
    """`mysql/shop #42` over `2026-11-27 20:15` (when it was taken)."""
    if last is None:
        return "-"
    taken = (last["backup_date"] or last["archived_at"]).replace("T", " ")[:16]
    return f"{last['db_type']}/{escape(last['database_name'])} #{last['backup_id']}\n{taken}"


def _freshness(last_success_at: str | None, now: datetime, max_age: timedelta) -> str:
    """How long ago the stack last succeeded: green when fresh, red when stale."""
    if last_success_at is None:
        return "[yellow]never[/yellow]"
    age = now - datetime.fromisoformat(last_success_at)
    colour = "green" if age <= max_age else "red"
    return f"[{colour}]{human_duration(age)} ago[/{colour}]"


def _verified_cell(stack: dict[str, Any], now: datetime) -> str:
    """How long ago the stack's backups were last checked; corrupt ones in red."""
    if stack["corrupt"]:
        return f"[red]{stack['corrupt']} corrupt[/red]"
    checked = stack["last_verified_at"]
    if checked is None:
        return "[yellow]never[/yellow]"
    age = now - datetime.fromisoformat(checked)
    return f"[green]{human_duration(age)} ago[/green]"


def _failure_count(count: int) -> str:
    return f"[red]{count}[/red]" if count else "[green]0[/green]"


def _backups_table(archived: list[dict[str, Any]]) -> Table:
    table = Table(title="Archived backups", show_lines=False)
    for column in ("stack", "db", "database", "backup", "date", "size", "archived at", "verified"):
        table.add_column(column, justify="right" if column in ("backup", "size") else "left")
    for entry in archived:
        table.add_row(
            entry["stack_uid"],
            entry["db_type"],
            entry["database_name"],
            str(entry["backup_id"]),
            entry["backup_date"] or "-",
            human_bytes(entry["size"]),
            entry["archived_at"],
            _backup_check_cell(entry),
        )
    return table


def _print_last_verify(
    run: dict[str, Any] | None, archived: list[dict[str, Any]], console: Console
) -> None:
    if run is None:
        console.print("No verify has run yet (`c66-archiver verify`).")
        return
    failed = run["failed"]
    outcome = f"[red]{failed} corrupt[/red]" if failed else "[green]all intact[/green]"
    console.print(
        f"Last verify: {outcome}, {run['checked']} checked, finished {run['finished_at']}"
    )
    for entry in archived:
        if entry["verify_ok"] is False:
            console.print(
                f"  [red]corrupt[/red] stack {escape(entry['stack_uid'])} backup "
                f"{entry['backup_id']} ({escape(entry['location'])}): "
                f"{escape(str(entry['verify_problem']))}",
                highlight=False,
            )


def _backup_check_cell(entry: dict[str, Any]) -> str:
    if entry["verify_ok"] is None:
        return "-"
    if entry["verify_ok"]:
        return f"[green]ok[/green] {entry['verified_at']}"
    return f"[red]{escape(str(entry['verify_problem']))}[/red]"


def _print_last_run(run: dict[str, Any] | None, console: Console) -> None:
    if run is None:
        console.print("No pass has run yet.")
        return
    outcome = "[green]ok[/green]" if run["ok"] else "[red]failures[/red]"
    console.print(
        f"Last pass: {outcome}, started {run['started_at']}, finished {run['finished_at']}, "
        f"archived {run['archived']}, skipped {run['skipped']}, {human_bytes(run['bytes'])}"
    )
    for failure in run["failed"]:
        console.print(
            f"  [red]failed[/red] stack {failure['stack_uid']} backup {failure['backup_id']}: "
            f"{escape(str(failure['reason']))}",
            markup=True,
            highlight=False,
        )

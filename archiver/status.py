"""`c66-archiver status`: what is archived, the last run and its failures."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from archiver.config import Settings
from archiver.manifest import ArchivedBackup
from archiver.state import RunRecord, StateStore


def status_document(state: StateStore) -> dict[str, Any]:
    """The contract's `status --json` object."""
    return {
        "archived": [_archived_entry(record) for record in state.archived()],
        "last_run": _run_entry(state.last_run()),
    }


def _archived_entry(record: ArchivedBackup) -> dict[str, Any]:
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
    }


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


async def print_status(settings: Settings, *, as_json: bool, console: Console | None = None) -> int:
    """Print the status as a table or JSON; exit 0."""
    state = StateStore.open(settings.state.path)
    try:
        document = status_document(state)
    finally:
        state.close()
    if as_json:
        print(json.dumps(document, indent=2))
    else:
        render_status(document, console or Console())
    return 0


def render_status(document: dict[str, Any], console: Console) -> None:
    """A readable table of archived backups, then the last run and its failures."""
    table = Table(title="Archived backups", show_lines=False)
    for column in ("stack", "db", "database", "backup", "date", "size", "archived at"):
        table.add_column(column, justify="right" if column in ("backup", "size") else "left")
    for entry in document["archived"]:
        table.add_row(
            entry["stack_uid"],
            entry["db_type"],
            entry["database_name"],
            str(entry["backup_id"]),
            entry["backup_date"] or "-",
            _human(entry["size"]),
            entry["archived_at"],
        )
    console.print(table)
    run = document["last_run"]
    if run is None:
        console.print("No pass has run yet.")
        return
    outcome = "[green]ok[/green]" if run["ok"] else "[red]failures[/red]"
    console.print(
        f"Last pass: {outcome}, started {run['started_at']}, finished {run['finished_at']}, "
        f"archived {run['archived']}, skipped {run['skipped']}, {_human(run['bytes'])}"
    )
    for failure in run["failed"]:
        console.print(
            f"  [red]failed[/red] stack {failure['stack_uid']} backup {failure['backup_id']}: "
            f"{failure['reason']}",
            markup=True,
            highlight=False,
        )


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"

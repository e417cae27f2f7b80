"""`c66-archiver status`: per stack what is archived and how fresh; the last pass's failures.

The document itself is `archiver.service.status_document.status_document`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from archiver.config.settings import Settings
from archiver.core.units import human_bytes, human_duration
from archiver.lifecycle.destinations import adopt_legacy_rows
from archiver.service.schedule import max_age_for
from archiver.service.status_document import status_document
from archiver.state.store import StateStore


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
        adopt_legacy_rows(state, settings.storage)  # a state from before several destinations
        document = status_document(
            state,
            destinations=settings.storage,
            configured=[stack.uid for stack in settings.stacks],
        )
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
    if len(document.get("storage", [])) > 1:
        console.print(_destinations_table(document["storage"]))
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


def _destinations_table(destinations: list[dict[str, Any]]) -> Table:
    """Per destination what it holds, and what a later pass fills in."""
    table = Table(title="Destinations")
    table.add_column("name")
    table.add_column("where", overflow="fold")
    for column in ("backups", "size", "missing"):
        table.add_column(column, justify="right")
    for entry in destinations:
        missing = entry["missing"]
        lock = " [dim](object lock)[/dim]" if entry.get("object_lock") else ""
        table.add_row(
            escape(entry["name"]),
            escape(entry["location"]) + lock,
            str(entry["backups"]),
            human_bytes(entry["bytes"]),
            f"[yellow]{missing}[/yellow]" if missing else "[green]0[/green]",
        )
    return table


def _backups_table(archived: list[dict[str, Any]]) -> Table:
    table = Table(title="Archived backups", show_lines=False)
    for column in ("stack", "db", "database", "backup", "date", "size", "archived at", "copies",
                   "verified"):
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
            escape(" ".join(copy["storage"] for copy in entry.get("copies", []))),
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
        where = f" in {failure['storage']}" if failure.get("storage") else ""
        console.print(
            f"  [red]failed[/red] stack {failure['stack_uid']} backup {failure['backup_id']}"
            f"{escape(where)}: {escape(str(failure['reason']))}",
            markup=True,
            highlight=False,
        )

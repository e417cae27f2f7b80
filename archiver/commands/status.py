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

from archiver.commands.status_watch import print_watch
from archiver.commands.tables import (
    add_grouped_rows,
    add_stack_column,
    command_table,
    short_date,
    stack_cell,
)
from archiver.config.settings import Settings
from archiver.core.terminal import stdout_console
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
    """Print the status as tables or JSON; exit 0. Creates nothing: no state reads as empty."""
    state = StateStore.open_existing(settings.state.path) or StateStore.empty()
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
        render_status(document, console or stdout_console(), max_age=max_age_for(settings),
                      all=show_all)
    return 0


def render_status(
    document: dict[str, Any], console: Console, *, max_age: timedelta, all: bool = False
) -> None:
    """Per-stack summary, the watch's findings (only when there are some), the destinations
    (when there are several), optionally every archived backup, then the last pass and
    failures."""
    now = datetime.now(UTC)
    console.print(stacks_table(document["stacks"], max_age, now))
    print_watch(document.get("watch", {}), console)
    several = len(document.get("storage", [])) > 1
    if several:
        console.print(destinations_table(document["storage"]))
    if all:
        console.print(
            backups_table(document["archived"], _names(document["stacks"]), now, several=several)
        )
    _print_last_run(document["last_run"], console, now)
    _print_last_verify(document["last_verify"], document["archived"], console, now)


def stacks_table(stacks: list[dict[str, Any]], max_age: timedelta, now: datetime) -> Table:
    """One row a stack: its newest backup and age, totals, last success, last check."""
    stale = any(_is_stale(stack["last_success_at"], now, max_age) for stack in stacks)
    caption = f"[red]red[/red]: no success for more than {human_duration(max_age)}"
    table = command_table("Stacks", caption if stale else None)
    add_stack_column(table)
    table.add_column("last backup", overflow="fold")
    table.add_column("archived", justify="right")
    table.add_column("success")
    table.add_column("verified")
    for stack in stacks:
        table.add_row(
            stack_cell(stack["stack_uid"], stack.get("stack_name")),
            _last_backup_cell(stack["last_backup"], stack["last_backup_age_seconds"], now),
            f"{stack['archived_count']}, {human_bytes(stack['archived_bytes'])}",
            _success_cell(stack["last_success_at"], len(stack["failures"]), now, max_age),
            _verified_cell(stack, now),
        )
    return table


def _names(stacks: list[dict[str, Any]]) -> dict[str, str]:
    """Stack uid -> name, for the stacks whose name is known."""
    return {stack["stack_uid"]: stack["stack_name"] for stack in stacks if stack.get("stack_name")}


def _last_backup_cell(last: dict[str, Any] | None, age: float | None, now: datetime) -> str:
    """`mysql/shop #42` over `Nov 27 20:15, 1d12h ago` (when it was taken)."""
    if last is None:
        return "-"
    taken = short_date(last["backup_date"] or last["archived_at"], now)
    ago = f", {human_duration(timedelta(seconds=age))} ago" if age is not None else ""
    return f"{last['db_type']}/{escape(last['database_name'])} #{last['backup_id']}\n{taken}{ago}"


def _is_stale(last_success_at: str | None, now: datetime, max_age: timedelta) -> bool:
    return last_success_at is not None and now - datetime.fromisoformat(last_success_at) > max_age


def _success_cell(
    last_success_at: str | None, failures: int, now: datetime, max_age: timedelta
) -> str:
    """How long ago the stack last succeeded (green, or red when stale); failures below."""
    if last_success_at is None:
        cell = "[yellow]never[/yellow]"
    else:
        age = now - datetime.fromisoformat(last_success_at)
        colour = "red" if age > max_age else "green"
        cell = f"[{colour}]{human_duration(age)} ago[/{colour}]"
    return cell + (f"\n[red]{failures} failed[/red]" if failures else "")


def _verified_cell(stack: dict[str, Any], now: datetime) -> str:
    """How long ago the stack's backups were last checked; corrupt ones in red."""
    if stack["corrupt"]:
        return f"[red]{stack['corrupt']} corrupt[/red]"
    checked = stack["last_verified_at"]
    if checked is None:
        return "[yellow]never[/yellow]"
    age = now - datetime.fromisoformat(checked)
    return f"[green]{human_duration(age)} ago[/green]"


def destinations_table(destinations: list[dict[str, Any]]) -> Table:
    """Per destination what it holds, and what a later pass fills in there."""
    table = command_table("Destinations")
    table.add_column("name", overflow="fold")
    table.add_column("where", overflow="fold")
    table.add_column("holds", justify="right")
    table.add_column("missing", justify="right")
    for entry in destinations:
        missing = entry["missing"]
        lock = "\n[dim]object lock[/dim]" if entry.get("object_lock") else ""
        table.add_row(
            escape(entry["name"]),
            escape(entry["location"]) + lock,
            f"{entry['backups']}, {human_bytes(entry['bytes'])}",
            f"[yellow]{missing}[/yellow]" if missing else "[green]0[/green]",
        )
    return table


def backups_table(
    archived: list[dict[str, Any]], names: dict[str, str], now: datetime, *, several: bool = False
) -> Table:
    """Every archived backup, grouped by stack (named once, on its first row); with several
    destinations, which hold it."""
    table = command_table("Archived backups")
    add_stack_column(table)
    table.add_column("backup", overflow="fold")
    table.add_column("taken")
    table.add_column("size", justify="right")
    table.add_column("verified", overflow="fold")
    add_grouped_rows(
        table,
        sorted(archived, key=lambda entry: entry["stack_uid"]),
        lambda entry: entry["stack_uid"],
        lambda entry: [
            f"#{entry['backup_id']} {entry['db_type']}/{escape(entry['database_name'])}"
            + (_held_in(entry) if several else ""),
            short_date(entry["backup_date"] or entry["archived_at"], now),
            human_bytes(entry["size"]),
            _backup_check_cell(entry, now),
        ],
        names,
    )
    return table


def _held_in(entry: dict[str, Any]) -> str:
    """`\nin near, far`: the destinations holding the backup."""
    return "\nin " + escape(", ".join(copy["storage"] for copy in entry.get("copies", [])))


def _backup_check_cell(entry: dict[str, Any], now: datetime) -> str:
    if entry["verify_ok"] is None:
        return "-"
    if entry["verify_ok"]:
        return f"[green]ok[/green] {short_date(entry['verified_at'], now)}"
    return f"[red]{escape(str(entry['verify_problem']))}[/red]"


def _print_last_verify(
    run: dict[str, Any] | None, archived: list[dict[str, Any]], console: Console, now: datetime
) -> None:
    if run is None:
        console.print("No verify has run yet (`c66-archiver verify`).", markup=False)
        return
    failed = run["failed"]
    outcome = f"[red]{failed} corrupt[/red]" if failed else "[green]all intact[/green]"
    console.print(
        f"Last verify: {outcome}, {run['checked']} checked, "
        f"finished {short_date(run['finished_at'], now)}"
    )
    for entry in archived:
        if entry["verify_ok"] is False:
            console.print(
                f"  [red]corrupt[/red] stack {escape(entry['stack_uid'])} backup "
                f"{entry['backup_id']} ({escape(entry['location'])}): "
                f"{escape(str(entry['verify_problem']))}"
            )


def _print_last_run(run: dict[str, Any] | None, console: Console, now: datetime) -> None:
    if run is None:
        console.print("No pass has run yet.")
        return
    outcome = "[green]ok[/green]" if run["ok"] else f"[red]{_not_ok(run)}[/red]"
    console.print(
        f"Last pass: {outcome}, finished {short_date(run['finished_at'], now)}: "
        f"archived {run['archived']}, skipped {run['skipped']}, {human_bytes(run['bytes'])}"
    )
    for failure in run["failed"]:
        console.print(f"  [red]failed[/red] {_failure_subject(failure)}: "
                      f"{escape(str(failure['reason']))}")


def _not_ok(run: dict[str, Any]) -> str:
    """A pass not ok with no failure listed was cut short (a stop, a refused token): backups
    due were left, nothing failed."""
    return "failures" if run["failed"] else "incomplete"


def _failure_subject(failure: dict[str, Any]) -> str:
    """`stack X backup 7 in far`; `stack X` for a stack-level failure; `the pass` (or
    `destination far`) for the whole pass."""
    storage = failure.get("storage")
    if failure["stack_uid"] == "*":
        return f"destination {escape(str(storage))}" if storage else "the pass"
    subject = f"stack {escape(str(failure['stack_uid']))}"
    if failure["backup_id"] is not None:
        subject += f" backup {failure['backup_id']}"
    return subject + (f" in {escape(str(storage))}" if storage else "")

"""`c66-archiver prune`: show or carry out what `[retention]` keeps and removes.

A writer: it takes the state lock (exit 3 beside a running daemon; the daemon
prunes by itself with `after_pass = true`). `--dry-run` changes nothing.
"""

from __future__ import annotations

import json

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from archiver.config.settings import Settings
from archiver.core.errors import EXIT_OK, EXIT_PARTIAL
from archiver.lifecycle.archive import open_archive
from archiver.lifecycle.prune import PrunePlan, Pruner, Verdict, plan_prune
from archiver.model.summary import Failure


async def run_prune(settings: Settings, *, dry_run: bool, as_json: bool) -> int:
    """Plan from the state; remove unless `dry_run`; print; exit 0, or 1 when a removal failed."""
    async with open_archive(settings, lock=True) as archive:
        plan = plan_prune(settings, archive.state.archived.all())
        failures = [] if dry_run else await Pruner(archive.state, archive.storage).carry_out(plan)
    if as_json:
        document = plan.as_json(dry_run=dry_run)
        document["failed"] = [failure.as_dict() for failure in failures]
        print(json.dumps(document, indent=2))
    else:
        _print_plan(plan, failures, dry_run=dry_run, retention_set=settings.retention is not None)
    return EXIT_PARTIAL if failures else EXIT_OK


def _print_plan(
    plan: PrunePlan, failures: list[Failure], *, dry_run: bool, retention_set: bool
) -> None:
    console = Console(stderr=False, highlight=False)
    if not console.is_terminal:
        console = Console(width=200, highlight=False)
    verdicts = sorted(plan.keep + plan.remove, key=_series_order)
    if verdicts:
        console.print(_table(verdicts))
    if not retention_set:
        console.print("No [retention] in the config: every backup is kept.", markup=False)
    for failure in failures:
        console.print(f"[red]failed[/red] {escape(failure.reason)}")
    removed = len(plan.remove) - len(failures)
    action = f"would remove {len(plan.remove)}" if dry_run else f"removed {removed}"
    suffix = " (dry run: nothing was changed)" if dry_run else ""
    console.print(f"kept {len(plan.keep)}, {action}{suffix}", markup=False)


def _series_order(verdict: Verdict) -> tuple[str, str, str, str, int]:
    record = verdict.record
    date = record.backup_date or ""
    return (record.stack_uid, record.db_type, record.database_name, date, record.backup_id)


def _table(verdicts: list[Verdict]) -> Table:
    table = Table(title="Retention", show_lines=False)
    table.add_column("stack", overflow="fold")
    for column in ("db", "database", "backup", "date", "verdict"):
        table.add_column(column, justify="right" if column == "backup" else "left")
    for verdict in verdicts:
        record = verdict.record
        outcome = (
            f"[green]keep[/green]: {escape(', '.join(verdict.reasons))}"
            if verdict.keep
            else "[red]remove[/red]"
        )
        table.add_row(
            escape(record.stack_uid), record.db_type, escape(record.database_name),
            str(record.backup_id), record.backup_date or "-", outcome,
        )
    return table

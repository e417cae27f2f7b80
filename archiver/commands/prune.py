"""`c66-archiver prune`: show or carry out what retention keeps and removes, per destination.

A writer: it takes the state lock (exit 3 beside a running daemon; the daemon
prunes by itself with `after_pass = true`). `--dry-run` changes nothing.
Each destination is planned with its own policy (`[retention]`, then the
stack's, then the destination's); copies under S3 Object Lock are listed with
their `locked_until` and left in place.
"""

from __future__ import annotations

import json

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from archiver.config.settings import Settings, destination_named, policy_for
from archiver.core.errors import EXIT_OK, EXIT_PARTIAL
from archiver.lifecycle.archive import Archive, open_archive
from archiver.lifecycle.prune import (
    PruneOutcome,
    PrunePlan,
    Pruner,
    Verdict,
    plan_prune,
    with_locks,
)
from archiver.storage.destinations import Destination


async def run_prune(
    settings: Settings, *, dry_run: bool, as_json: bool, storage: str | None = None
) -> int:
    """Plan each destination from the state; remove unless `dry_run`; print; exit 0, or 1 when
    a removal failed."""
    if storage is not None:
        destination_named(settings, storage)  # an unknown name is exit 2, before anything
    plan, outcome = PrunePlan(), PruneOutcome()
    async with open_archive(settings, lock=True) as archive:
        for destination in _chosen(archive, storage):
            own = await with_locks(_plan(archive, destination), destination)
            plan.extend(own)
            if not dry_run:
                done = await Pruner(archive.state, destination).carry_out(own, locks_checked=True)
                outcome.removed += done.removed
                outcome.failures.extend(done.failures)
    if as_json:
        document = plan.as_json(dry_run=dry_run)
        document["failed"] = [failure.as_dict() for failure in outcome.failures]
        print(json.dumps(document, indent=2))
    else:
        _print_plan(plan, outcome, dry_run=dry_run, settings=settings)
    return EXIT_PARTIAL if outcome.failures else EXIT_OK


def _chosen(archive: Archive, storage: str | None) -> list[Destination]:
    return [d for d in archive.destinations if storage in (None, d.name)]


def _plan(archive: Archive, destination: Destination) -> PrunePlan:
    settings = archive.settings
    return plan_prune(
        lambda stack_uid: policy_for(settings, stack_uid, destination.settings),
        archive.state.archived.all(destination.name),
    )


def _print_plan(
    plan: PrunePlan, outcome: PruneOutcome, *, dry_run: bool, settings: Settings
) -> None:
    console = Console(stderr=False, highlight=False)
    if not console.is_terminal:
        console = Console(width=200, highlight=False)
    verdicts = sorted(plan.keep + plan.remove, key=_series_order)
    if verdicts:
        console.print(_table(verdicts, several=len(settings.storage) > 1))
    if settings.retention is None and not any(d.retention for d in settings.storage):
        console.print("No [retention] in the config: every backup is kept.", markup=False)
    for failure in outcome.failures:
        console.print(f"[red]failed[/red] {escape(failure.reason)}")
    locked = len(plan.locked)
    removable = len(plan.remove) - locked
    action = f"would remove {removable}" if dry_run else f"removed {outcome.removed}"
    held = f", {locked} left in place under S3 Object Lock" if locked else ""
    suffix = " (dry run: nothing was changed)" if dry_run else ""
    console.print(f"kept {len(plan.keep)}, {action}{held}{suffix}", markup=False)


def _series_order(verdict: Verdict) -> tuple[str, str, str, str, int, str]:
    record = verdict.record
    date = record.backup_date or ""
    return (record.stack_uid, record.db_type, record.database_name, date, record.backup_id,
            record.storage)


def _table(verdicts: list[Verdict], *, several: bool) -> Table:
    table = Table(title="Retention", show_lines=False)
    table.add_column("stack", overflow="fold")
    for column in ("db", "database", "backup", "date", *(("storage",) if several else ()),
                   "verdict"):
        table.add_column(column, justify="right" if column == "backup" else "left")
    for verdict in verdicts:
        record = verdict.record
        storage = (escape(record.storage),) if several else ()
        table.add_row(
            escape(record.stack_uid), record.db_type, escape(record.database_name),
            str(record.backup_id), record.backup_date or "-", *storage, _outcome(verdict),
        )
    return table


def _outcome(verdict: Verdict) -> str:
    if verdict.keep:
        return f"[green]keep[/green]: {escape(', '.join(verdict.reasons))}"
    if verdict.locked_until is not None:
        return f"[yellow]locked until {escape(verdict.locked_until)}[/yellow]"
    return "[red]remove[/red]"

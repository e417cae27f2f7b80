"""`c66-archiver prune`: show or carry out what retention keeps and removes, per destination.

`--dry-run` changes nothing and takes no lock: it runs beside anything. For real,
prune takes the state's pass lock (`archiver.state.lock`): beside a daemon that
sleeps between passes it runs (the daemon reads the state afresh at its next
pass, so nothing pruned is downloaded again); while a pass runs it exits 3 at
once, or waits for the pass to end with `wait`.

Each destination is planned with its own policy (`[retention]`, then the
stack's, then the destination's); copies under S3 Object Lock are listed with
their `locked_until` and left in place.
"""

from __future__ import annotations

import json

import structlog
from rich.markup import escape
from rich.table import Table

from archiver.commands.tables import (
    add_grouped_rows,
    add_stack_column,
    command_table,
    short_date,
)
from archiver.config.settings import Settings, destination_named, policy_for
from archiver.core.errors import EXIT_OK, EXIT_PARTIAL
from archiver.core.terminal import stdout_console
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

log = structlog.get_logger(__name__)


async def run_prune(
    settings: Settings,
    *,
    dry_run: bool,
    as_json: bool,
    wait: bool = False,
    storage: str | None = None,
) -> int:
    """Plan each destination from the state; remove unless `dry_run`; print; exit 0, or 1 when
    a removal failed."""
    if storage is not None:
        destination_named(settings, storage)  # an unknown name is exit 2, before anything
    async with open_archive(settings, lock=False) as archive:
        chosen = [d for d in archive.destinations if storage in (None, d.name)]
        if dry_run:
            plan, outcome = await _plan_all(archive, chosen), PruneOutcome()
        else:
            plan, outcome = await _prune(archive, chosen, wait=wait)
    if as_json:
        document = plan.as_json(dry_run=dry_run)
        document["failed"] = [failure.as_dict() for failure in outcome.failures]
        print(json.dumps(document, indent=2))
    else:
        _print_plan(plan, outcome, dry_run=dry_run, settings=settings)
    return EXIT_PARTIAL if outcome.failures else EXIT_OK


async def _plan_all(archive: Archive, chosen: list[Destination]) -> PrunePlan:
    """Every chosen destination's plan, with what Object Lock still keeps marked."""
    plan = PrunePlan()
    for destination in chosen:
        plan.extend(await with_locks(_plan(archive, destination), destination))
    return plan


def _plan(archive: Archive, destination: Destination) -> PrunePlan:
    settings = archive.settings
    return plan_prune(
        lambda stack_uid: policy_for(settings, stack_uid, destination.settings),
        archive.state.archived.all(destination.name),
    )


async def _prune(
    archive: Archive, chosen: list[Destination], *, wait: bool
) -> tuple[PrunePlan, PruneOutcome]:
    """Under the pass lock: plan from the state as it is now, then remove, per destination."""
    pass_lock = archive.state.pass_lock
    if wait:
        await pass_lock.acquire_waiting(on_wait=_waiting_for_pass)
    else:
        pass_lock.acquire()
    plan, outcome = PrunePlan(), PruneOutcome()
    try:
        for destination in chosen:
            own = await with_locks(_plan(archive, destination), destination)
            plan.extend(own)
            done = await Pruner(archive.state, destination).carry_out(own, locks_checked=True)
            outcome.removed += done.removed
            outcome.failures.extend(done.failures)
    finally:
        pass_lock.release()
    return plan, outcome


def _waiting_for_pass(pid: str) -> None:
    log.info("a pass is running on this state; prune starts when it ends", pid=pid)


def _print_plan(
    plan: PrunePlan, outcome: PruneOutcome, *, dry_run: bool, settings: Settings
) -> None:
    console = stdout_console()
    verdicts = sorted(plan.keep + plan.remove, key=_series_order)
    if verdicts:
        console.print(_table(verdicts, several=len(settings.storage) > 1))
    if settings.retention is None and not any(d.retention for d in settings.storage):
        console.print("No [retention] in the config: every backup is kept.", markup=False)
    for failure in outcome.failures:
        console.print(f"[red]failed[/red] {escape(failure.reason)}")
    locked = len(plan.locked)
    action = f"would remove {len(plan.remove) - locked}" if dry_run else (
        f"removed {outcome.removed}"
    )
    held = f", {locked} left in place under S3 Object Lock" if locked else ""
    suffix = " (dry run: nothing was changed)" if dry_run else ""
    console.print(f"kept {len(plan.keep)}, {action}{held}{suffix}", markup=False)


def _series_order(verdict: Verdict) -> tuple[str, str, str, str, int, str]:
    record = verdict.record
    date = record.backup_date or ""
    return (record.stack_uid, record.db_type, record.database_name, date, record.backup_id,
            record.storage)


def _table(verdicts: list[Verdict], *, several: bool = False) -> Table:
    """Per stack, each series oldest first: the backup, when it was taken, the verdict (with
    several destinations, the verdict's destination)."""
    table = command_table("Retention")
    add_stack_column(table)
    table.add_column("backup", overflow="fold")
    table.add_column("taken")
    table.add_column("verdict", overflow="fold")
    add_grouped_rows(
        table,
        verdicts,
        lambda verdict: verdict.record.stack_uid,
        lambda verdict: [
            f"#{verdict.record.backup_id} {verdict.record.db_type}/"
            f"{escape(verdict.record.database_name)}",
            short_date(verdict.record.backup_date),
            (f"{escape(verdict.record.storage)}: " if several else "") + _outcome(verdict),
        ],
    )
    return table


def _outcome(verdict: Verdict) -> str:
    if verdict.keep:
        return f"[green]keep[/green]: {escape(', '.join(verdict.reasons))}"
    if verdict.locked_until is not None:
        return f"[yellow]locked until {escape(verdict.locked_until)}[/yellow]"
    return "[red]remove[/red]"

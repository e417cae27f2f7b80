"""`c66-archiver prune`: show or carry out what `[retention]` keeps and removes.

`--dry-run` changes nothing and takes no lock: it runs beside anything. For real,
prune takes the state's pass lock (`archiver.state.lock`): beside a daemon that
sleeps between passes it runs (the daemon reads the state afresh at its next
pass, so nothing pruned is downloaded again); while a pass runs it exits 3 at
once, or waits for the pass to end with `wait`.
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
from archiver.config.settings import Settings
from archiver.core.errors import EXIT_OK, EXIT_PARTIAL
from archiver.core.terminal import stdout_console
from archiver.lifecycle.archive import Archive, open_archive
from archiver.lifecycle.prune import PrunePlan, Pruner, Verdict, plan_prune
from archiver.model.summary import Failure

log = structlog.get_logger(__name__)


async def run_prune(
    settings: Settings, *, dry_run: bool, as_json: bool, wait: bool = False
) -> int:
    """Plan from the state; remove unless `dry_run`; print; exit 0, or 1 when a removal failed."""
    async with open_archive(settings, lock=False) as archive:
        if dry_run:
            plan = plan_prune(settings, archive.state.archived.all())
            failures: list[Failure] = []
        else:
            plan, failures = await _prune(archive, wait=wait)
    if as_json:
        document = plan.as_json(dry_run=dry_run)
        document["failed"] = [failure.as_dict() for failure in failures]
        print(json.dumps(document, indent=2))
    else:
        _print_plan(plan, failures, dry_run=dry_run, retention_set=settings.retention is not None)
    return EXIT_PARTIAL if failures else EXIT_OK


async def _prune(archive: Archive, *, wait: bool) -> tuple[PrunePlan, list[Failure]]:
    """Under the pass lock: plan from the state as it is now, then remove."""
    pass_lock = archive.state.pass_lock
    if wait:
        await pass_lock.acquire_waiting(on_wait=_waiting_for_pass)
    else:
        pass_lock.acquire()
    try:
        plan = plan_prune(archive.settings, archive.state.archived.all())
        return plan, await Pruner(archive.state, archive.storage).carry_out(plan)
    finally:
        pass_lock.release()


def _waiting_for_pass(pid: str) -> None:
    log.info("a pass is running on this state; prune starts when it ends", pid=pid)


def _print_plan(
    plan: PrunePlan, failures: list[Failure], *, dry_run: bool, retention_set: bool
) -> None:
    console = stdout_console()
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
    """Per stack, each series oldest first: the backup, when it was taken, the verdict."""
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
            _outcome(verdict),
        ],
    )
    return table


def _outcome(verdict: Verdict) -> str:
    if verdict.keep:
        return f"[green]keep[/green]: {escape(', '.join(verdict.reasons))}"
    return "[red]remove[/red]"

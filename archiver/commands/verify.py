"""`c66-archiver verify`: check stored backups, remember the results, alert on corruption.

A reader: it takes no state lock, so a weekly timer can run it beside the
daemon (whose /metrics then shows the results). Results go to the state (per
backup, and the run), to `status`, and, when something is wrong, to the
failure ping and the webhook of `[notify]`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import structlog
from rich.markup import escape
from rich.table import Table

from archiver.commands.tables import (
    add_grouped_rows,
    add_stack_column,
    command_table,
    short_date,
)
from archiver.config.settings import Settings, destination_named
from archiver.core.errors import EXIT_OK, EXIT_PARTIAL
from archiver.core.terminal import stdout_console
from archiver.core.units import human_bytes
from archiver.lifecycle.archive import Archive, open_archive
from archiver.lifecycle.identity import identities_for
from archiver.lifecycle.verify import CheckResult, Verifier, select_backups
from archiver.model.layout import ENCRYPTED_SUFFIX
from archiver.model.manifest import ArchivedBackup, utc_now_iso
from archiver.service.alerts import AlertSender, alerts_configured
from archiver.state.records import Verification, VerifyRun
from archiver.state.store import StateStore
from archiver.storage.destinations import Destination
from archiver.sync.progress import PassProgress

log = structlog.get_logger(__name__)

# Backups checked at once: enough to overlap one's latency with another's hashing.
_CONCURRENT_CHECKS = 2


async def run_verify(
    settings: Settings,
    *,
    subset: tuple[int, int] | None,
    percent: float | None,
    deep: bool,
    as_json: bool,
    identity: Path | None = None,
    quiet: bool = False,
    storage: str | None = None,
) -> int:
    """Check the selected copies (every destination's, or `storage`'s); print; exit 0 when all
    are intact, else 1.

    The progress display shows on a terminal, unless `quiet` or `as_json`."""
    if storage is not None:
        destination_named(settings, storage)  # an unknown name is exit 2, before anything
    async with open_archive(settings, lock=False, workers=2 + 2 * _CONCURRENT_CHECKS) as archive:
        verifiers = {
            d.name: _LazyVerifier(archive, d, deep=deep, identity=identity)
            for d in archive.destinations
            if storage in (None, d.name)
        }
        copies = [r for r in archive.state.archived.all() if r.storage in verifiers]
        chosen = select_backups(copies, subset=subset, percent=percent)
        checked = await _check_all(verifiers, chosen, show_progress=not (as_json or quiet))
        results = without_pruned_meanwhile(archive.state, checked)
        _record(archive.state, results, deep=deep)
        _forget_gone(archive.state, results)
    failed = [result for result in results if not result.ok]
    if failed and alerts_configured(settings.notify):
        await _alert(settings, failed, checked=len(results), several=len(settings.storage) > 1)
    if as_json:
        document = {"ok": not failed, "checked": [result.as_dict() for result in results]}
        print(json.dumps(document, indent=2))
    else:
        _print_results(results, deep=deep)
    return EXIT_PARTIAL if failed else EXIT_OK


class _LazyVerifier:
    """A destination's verifier, made when first needed: the identity is loaded (and its
    absence reported) only when a deep check meets an encrypted copy there."""

    def __init__(
        self, archive: Archive, destination: Destination, *, deep: bool, identity: Path | None
    ) -> None:
        self._archive = archive
        self._destination = destination
        self._deep = deep
        self._identity = identity
        self._made: dict[bool, Verifier] = {}

    def for_record(self, record: ArchivedBackup) -> Verifier:
        encrypted = self._deep and record.tar_key.endswith(ENCRYPTED_SUFFIX)
        if encrypted not in self._made:
            settings = self._archive.settings
            identities = (
                identities_for(settings, self._identity, self._destination.encryption)
                if encrypted else []
            )
            self._made[encrypted] = Verifier(
                self._destination, self._archive.executor, deep=self._deep, identities=identities
            )
        return self._made[encrypted]


async def _check_all(
    verifiers: dict[str, _LazyVerifier], records: list[ArchivedBackup], *, show_progress: bool
) -> list[CheckResult]:
    limit = asyncio.Semaphore(_CONCURRENT_CHECKS)
    # Identities load before any check starts, so a missing one is exit 2 with nothing read.
    chosen = [(record, verifiers[record.storage].for_record(record)) for record in records]
    with PassProgress(enabled=show_progress and sys.stderr.isatty()) as progress:

        async def check(record: ArchivedBackup, verifier: Verifier) -> CheckResult:
            key = f"{record.stack_uid}/{record.backup_id}/{record.storage}"
            async with limit:
                label = f"{record.stack_uid[:8]} #{record.backup_id} {record.storage}"
                progress.add_backup(key, label, record.size)
                result = await verifier.check(record, lambda n: progress.advance(key, n))
                progress.finish(key, ok=result.ok)
                return result

        return list(await asyncio.gather(*(check(record, v) for record, v in chosen)))


def without_pruned_meanwhile(state: StateStore, results: list[CheckResult]) -> list[CheckResult]:
    """Drop the backups a `prune` beside us removed while they were being checked.

    Their objects went on purpose: calling them missing would be a false alarm.
    """
    pruned = {
        stack_uid: state.pruned.pruned_from(stack_uid)
        for stack_uid in {result.record.stack_uid for result in results if not result.ok}
    }
    return [
        result for result in results
        if result.ok
        or result.record.storage not in pruned[result.record.stack_uid].get(
            result.record.backup_id, set()
        )
    ]


def _forget_gone(state: StateStore, results: list[CheckResult]) -> None:
    """A copy whose manifest is gone (deleted outside the archiver) is not archived there any
    more, as the contract counts: the state stops claiming it, so `status` shows it missing
    and the next pass fills it in again (from another copy, or from Cloud 66)."""
    for result in results:
        if result.gone:
            record = result.record
            state.archived.forget(record.stack_uid, record.backup_id, record.storage)
            log.warning("a copy's manifest is gone: the next pass fills it in again",
                        stack_uid=record.stack_uid, backup_id=record.backup_id,
                        storage=record.storage)


def _record(state: StateStore, results: list[CheckResult], *, deep: bool) -> None:
    now = utc_now_iso()
    state.verifications.record(
        [
            Verification(
                r.record.stack_uid, r.record.backup_id, now, r.ok, r.problem, deep,
                r.record.storage,
            )
            for r in results
        ],
        VerifyRun(now, checked=len(results), failed=sum(1 for r in results if not r.ok)),
    )


async def _alert(
    settings: Settings, failed: list[CheckResult], *, checked: int, several: bool
) -> None:
    alerts = AlertSender(settings.notify)
    try:
        await alerts.verify_failed(
            [(r.record.stack_uid, r.record.backup_id,
              f"{r.record.storage}: {r.problem}" if several else (r.problem or ""))
             for r in failed],
            checked=checked,
        )
    finally:
        await alerts.aclose()


def _print_results(results: list[CheckResult], *, deep: bool) -> None:
    console = stdout_console()
    if results:
        console.print(_table(results))
    failed = sum(1 for result in results if not result.ok)
    checked_bytes = sum(result.record.size for result in results)
    kind = "deep (sha256 and tar)" if deep else "sha256"
    verdict = "[green]all intact[/green]" if not failed else f"[red]{failed} corrupt[/red]"
    console.print(
        f"checked {len(results)} backups, {human_bytes(checked_bytes)}, {kind}: {verdict}"
    )


def _table(results: list[CheckResult]) -> Table:
    """Per stack: each copy checked (with several destinations, in which), when it was taken,
    its size, what is wrong if anything."""
    several = len({result.record.storage for result in results}) > 1
    table = command_table("Verify")
    add_stack_column(table)
    table.add_column("backup", overflow="fold")
    table.add_column("taken")
    table.add_column("size", justify="right")
    table.add_column("result", overflow="fold")
    add_grouped_rows(
        table,
        sorted(results, key=lambda result: result.record.stack_uid),
        lambda result: result.record.stack_uid,
        lambda result: [
            f"#{result.record.backup_id} {result.record.db_type}/"
            f"{escape(result.record.database_name)}"
            + (f"\nin {escape(result.record.storage)}" if several else ""),
            short_date(result.record.backup_date),
            human_bytes(result.record.size),
            "[green]ok[/green]" if result.ok else f"[red]{escape(result.problem or '')}[/red]",
        ],
    )
    return table

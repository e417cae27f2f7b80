"""One pass: plan (API -> what each destination lacks) -> transfer -> commit -> report.

This is the only module where Cloud 66, storage and state meet. Per backup that
some destinations lack (`archiver.sync.plan`): a manifest already there is
adopted; a destination that stores it like another destination's copy gets
that copy (`archiver.sync.fill_in`); the rest get one download, streamed into
all of them at once (`archiver.transfer.fan_out`), while Cloud 66 lists the
backup, else a converted copy, else a report. Each destination commits on its
own (`archiver.sync.commit`): one that fails fails only its own copy.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from functools import partial

import structlog

from archiver.cloud66.models import Backup, Listing, Stack
from archiver.config.settings import Settings, StackSettings, policy_for, prunes_after_pass
from archiver.core.errors import (
    ApiError,
    ArchiverError,
    AuthError,
    PermanentStorageError,
    StorageError,
    StorageFull,
)
from archiver.core.secrets import redact
from archiver.core.stopping import Stopped
from archiver.lifecycle.import_staging import remove_expired_staging
from archiver.lifecycle.prune import Pruner, plan_prune
from archiver.lifecycle.rebuild import record_from_manifest
from archiver.model.manifest import utc_now_iso
from archiver.model.retention import RetentionPolicy
from archiver.model.summary import Failure, PassSummary
from archiver.service.observers import tell_observers
from archiver.state.records import PendingCommit
from archiver.storage.destinations import Destination
from archiver.sync.commit import Committer
from archiver.sync.fetch import Attempt, Fetcher, Reported
from archiver.sync.fill_in import FillIn
from archiver.sync.plan import Job, Planner
from archiver.sync.progress import PassProgress
from archiver.sync.room import RoomLedger
from archiver.sync.runtime import Runtime
from archiver.sync.watch_step import WatchStep
from archiver.transfer import commit
from archiver.transfer import resume as transfers
from archiver.transfer.join import resumable

log = structlog.get_logger(__name__)


class SyncPass:
    """Runs one pass over every configured (or discovered) stack."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        progress: PassProgress | None = None,
    ) -> None:
        self._rt = runtime
        self._progress = progress or PassProgress(enabled=False)
        self._stop = runtime.stop
        self._summary = PassSummary(started_at=utc_now_iso())
        self._planned_stacks: list[str] = []
        self._usable: list[Destination] = []
        # The watch judges what the plan read; without [discover] every stack is known.
        self._watch = WatchStep(runtime)
        self._every_stack_known = not runtime.settings.discover.enabled
        settings = runtime.settings.transfer
        # Backups in flight: each holds open uploads, so bound them like downloads.
        self._backups_in_flight = asyncio.Semaphore(settings.max_concurrent_downloads)
        self._committer = Committer(runtime.state, self._fail_destination)
        self._fill = FillIn(runtime.settings, runtime.state, self._committer,
                            self._fail_destination, runtime.encryptions)
        self._fetcher = Fetcher(runtime, self._committer, self._progress,
                                self._fail_destination, lambda: len(self._usable) > 1)
        # Out of room: what failed uploads gave back, and who may try again (archiver.sync.room).
        self._room: RoomLedger[Job] = RoomLedger()
        self._out_of_room: dict[Job, ArchiverError] = {}

    async def run(self) -> PassSummary:
        """Plan, transfer and commit; never raises for one stack's or one backup's trouble.

        Holds the state's pass lock throughout, so a `prune` run by hand waits for the
        pass (or exits 3), and a pass that falls due during a prune waits for it. The
        state is read afresh at each pass: nothing of it is kept between passes.
        """
        pass_lock = self._rt.state.pass_lock
        try:
            await pass_lock.acquire_waiting(self._stop, on_wait=_waiting_for_prune)
        except Stopped:
            log.info("stopping before the pass started")
            self._summary.stopped = True
            return self._summary
        try:
            return await self._run()
        finally:
            pass_lock.release()

    async def _run(self) -> PassSummary:
        started = time.monotonic()
        log.info("pass started")
        await tell_observers(self._rt.observers, lambda observer: observer.pass_started())
        archived_all = False
        try:
            self._usable = self._readable_destinations()
            await self._check_object_locks()
            # Before the plan reads the state: a finished commit makes its copy archived.
            unfinished = await self._settle_commits()
            await self._forget_vanished_copies()
            jobs = await self._plan()
            self._report_unfinished(unfinished, {(j.stack_uid, j.backup_id) for j in jobs})
            await self._tidy_destinations(jobs)
            await self._archive_all(jobs)
            archived_all = True
            self._summary.filled = self._fill.copies_made
            self._record_stack_successes()
            await self._watch.judge(self._planned_stacks, every_stack_known=self._every_stack_known)
            await self._prune_after_pass()
            await self._committer.lock_pending(self._usable)
            await self._watch.tell()
        except AuthError as error:
            self._summary.auth_error = error
            log.error("the Cloud 66 API refused the token", error=str(error))
        except Stopped:
            log.info("stopping: the rest of the pass is left for the next one")
            self._summary.stopped = True
            self._summary.left_due = self._summary.left_due or not archived_all
        except asyncio.CancelledError:  # the grace period ran out: transfers were abandoned
            self._summary.stopped = True
            self._summary.left_due = self._summary.left_due or not archived_all
            raise
        except StorageError as error:
            self._fail("*", None, f"storage unusable: {error}")
        finally:
            self._summary.seconds = time.monotonic() - started
            self._summary.finished_at = utc_now_iso()
            self._rt.state.runs.record(self._summary.as_run_record())
        log.info("pass finished", summary=self._summary.one_line(), ok=self._summary.ok)
        summary = self._summary
        await tell_observers(self._rt.observers, lambda observer: observer.pass_finished(summary))
        return summary

    # -- destinations ----------------------------------------------------------------------

    def _readable_destinations(self) -> list[Destination]:
        """The destinations this pass uses: those that could be read when the state opened."""
        archive = self._rt.archive
        for name, reason in archive.unreadable.items():
            self._summary.failed.append(
                Failure("*", None, f"destination could not be read: {reason}", name)
            )
        return [d for d in archive.destinations if d.name not in archive.unreadable]

    async def _check_object_locks(self) -> None:
        """A destination that asks for Object Lock and cannot lock sits the pass out, named:
        nothing is written there unlocked (not even a manifest `settle` would finish). Asked
        once a pass, before anything is written there: a bucket can lose its lock setting only
        by being made anew."""
        for destination in list(self._usable):
            try:
                problem = await destination.lock_problem()
            except (StorageError, OSError) as error:
                problem = f"could not check its Object Lock ({redact(str(error))})"
            if problem is not None:
                self._destination_down(
                    destination, f"object_lock: {problem}; nothing is written there unlocked"
                )

    async def _settle_commits(self) -> list[tuple[PendingCommit, StorageError | OSError]]:
        """Finish or clean the commits an earlier pass left half done, in every destination."""
        unfinished = []
        for destination in self._usable:
            unfinished += await commit.settle(self._rt.state, destination.storage, destination.name)
        return unfinished

    async def _forget_vanished_copies(self) -> None:
        """Before the plan: copies deleted from a destination behind our back are forgotten,
        so the plan fills them in again (`archiver.lifecycle.vanished`)."""
        for destination in list(self._usable):
            try:
                await self._rt.vanished.forget_vanished(self._rt.state, destination)
            except (StorageError, OSError) as error:
                self._destination_down(destination, redact(str(error)))

    def _report_unfinished(
        self, unfinished: list[tuple[PendingCommit, StorageError | OSError]],
        due: set[tuple[str, int]],
    ) -> None:
        """A commit that could not be finished fails its copy, unless the backup is due now
        (this pass tries it again and reports how that went)."""
        for pending, error in unfinished:
            if (pending.stack_uid, pending.backup_id) not in due:
                reason = f"an interrupted commit could not be finished: {redact(str(error))}"
                self._fail_destination(pending.stack_uid, pending.backup_id, pending.storage,
                                       reason)

    async def _tidy_destinations(self, jobs: list[Job]) -> None:
        """Per destination: expired import staging goes, and unfinished uploads of backups
        not due. A destination that fails this is left out of the pass (and named)."""
        due = {(job.stack_uid, job.backup_id) for job in jobs if job.backup is not None}
        kept = transfers.forget_not_due(self._rt.state, due)
        for destination in list(self._usable):
            try:
                await remove_expired_staging(destination.storage)
                await transfers.remove_unfinished(destination.storage, kept, destination.name)
            except (StorageError, OSError) as error:
                self._destination_down(destination, redact(str(error)))

    def _destination_down(self, destination: Destination, reason: str) -> None:
        self._usable.remove(destination)
        self._summary.failed.append(
            Failure("*", None, f"destination unusable this pass: {reason}", destination.name)
        )
        log.error("destination unusable this pass", storage=destination.name, reason=reason)

    # -- plan ---------------------------------------------------------------------------

    async def _plan(self) -> list[Job]:
        stacks = await self._stacks()
        self._planned_stacks = [stack.uid for stack in stacks]
        per_stack = await asyncio.gather(*(self._plan_stack(stack) for stack in stacks))
        return [job for jobs in per_stack for job in jobs]

    async def _stacks(self) -> list[StackSettings]:
        settings = self._rt.settings
        stacks = list(settings.stacks)
        if settings.discover.enabled:
            known = {stack.uid for stack in stacks}
            excluded = set(settings.discover.exclude)
            for stack in await self._discoverable_stacks():
                if stack.uid not in known and stack.uid not in excluded:
                    # Upstream data, not config: not held to the config's uid rule (the
                    # client quotes it in paths, the layout sanitises it on disk).
                    discovered = StackSettings.model_construct(
                        uid=stack.uid, db_types=settings.discover.db_types
                    )
                    stacks.append(discovered)
            log.info("stacks discovered", count=len(stacks))
        return stacks

    async def _discoverable_stacks(self) -> list[Stack]:
        """Every stack the token sees; on failure the configured stacks still run."""
        try:
            listing = await self._rt.client.read_stacks()
        except AuthError:
            raise
        except ApiError as error:
            self._fail("*", None, f"could not list stacks for [discover]: {redact(str(error))}")
            return []
        self._watch.discovered(listing)
        self._every_stack_known = listing.complete
        return listing.items

    async def _plan_stack(self, stack: StackSettings) -> list[Job]:
        with structlog.contextvars.bound_contextvars(stack_uid=stack.uid):
            backups: list[Backup] | None
            try:
                listing = await self._list_backups(stack)
            except AuthError:
                raise
            except ApiError as error:
                self._fail(stack.uid, None, f"could not list backups: {redact(str(error))}")
                backups = None
            else:
                self._watch.read(stack, listing)
                backups = listing.items
            plan = Planner(self._rt.state, self._usable).plan_stack(stack.uid, backups)
            self._summary.already += plan.already
            for backup in plan.not_ok:
                self._skip(stack.uid, backup)
            return plan.jobs

    async def _list_backups(self, stack: StackSettings) -> Listing[Backup]:
        # One db_type can be filtered by the API (fewer pages); several are filtered here,
        # because one unfiltered listing costs fewer requests than one per type.
        only_one = stack.db_types[0] if stack.db_types and len(stack.db_types) == 1 else None
        listing = await self._rt.client.read_backups(stack.uid, db_type=only_one, group=stack.group)
        if stack.db_types:
            wanted = [backup for backup in listing.items if backup.db_type in stack.db_types]
            listing = Listing(wanted, listing.complete)
        return listing

    def _skip(self, stack_uid: str, backup: Backup) -> None:
        self._summary.skipped += 1
        reason = f"backup_status {backup.backup_status}"
        if self._rt.state.runs.note_skipped(stack_uid, backup.id, reason):
            log.warning(
                "backup is not Ok upstream; skipped",
                backup_id=backup.id,
                db_type=backup.db_type,
                backup_status=backup.backup_status,
                backup_result=backup.backup_result,
            )

    # -- transfer and commit -----------------------------------------------------------

    async def _archive_all(self, jobs: list[Job]) -> None:
        """Every due backup, side by side; then, one at a time, those that ran out of room
        while others' partial uploads held it and that the room given back since may fit."""
        if jobs:
            log.info("backups due", count=len(jobs))
        await self._archive_each(jobs)
        again, given_up = self._room.take()
        for job, error in given_up:
            self._record_failure(job, self._out_of_room.pop(job, error))
        for job in again:  # alone: no other upload competes for the room given back
            log.info("room was given back: trying a backup that ran out of it again",
                     stack_uid=job.stack_uid, backup_id=job.backup_id)
            await self._archive_each([job], last_try=True)

    async def _archive_each(self, jobs: list[Job], *, last_try: bool = False) -> None:
        results = await asyncio.gather(
            *(self._archive_one(job, last_try=last_try) for job in jobs), return_exceptions=True
        )
        for result in results:
            if isinstance(result, AuthError):
                raise result
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result

    async def _archive_one(self, job: Job, *, last_try: bool) -> None:
        context = {"stack_uid": job.stack_uid, "backup_id": job.backup_id, "db_type": job.db_type}
        attempt = Attempt()
        with structlog.contextvars.bound_contextvars(**context):
            try:
                async with self._stop.holding(self._backups_in_flight):
                    await self._archive_due(job, attempt)
            except Stopped:
                self._progress.finish(job.keys.tar, ok=False)
                log.info("stopping: backup left for the next pass")
                self._summary.stopped = True
                self._summary.left_due = True
            except AuthError:
                raise
            except ArchiverError as error:
                self._failed(job, attempt, error, last_try=last_try)
            except OSError as error:  # a backend's raw error: name it, keep going
                self._failed(job, attempt, PermanentStorageError(str(error)), last_try=last_try)
            except Exception as error:  # a bug must cost one backup, not the pass
                log.exception("unexpected error archiving a backup")
                self._record_failure(job, ArchiverError(f"internal error: {error!r}"))

    def _failed(self, job: Job, attempt: Attempt, error: ArchiverError, *, last_try: bool) -> None:
        """A try failed: unless its uploads are kept to resume, the room they held is given
        back; one that ran out of room waits to see whether others give back enough.
        `Reported`: every destination failed on its own side, each named already."""
        cause = error.cause if isinstance(error, Reported) else error
        encrypted = any(destination.encrypted for destination in job.missing)
        if not (resumable(cause) and not encrypted):
            self._room.gave_back(job, attempt.written)
        if isinstance(cause, StorageFull) and not last_try:
            self._room.ran_out(job, cause, attempt.lacking)
            self._out_of_room[job] = error  # what to report if no room comes back
            self._progress.finish(job.keys.tar, ok=False)
            log.warning(
                "storage is full; tried again in this pass if other backups give room back",
                stack_uid=job.stack_uid, backup_id=job.backup_id, reason=redact(str(cause)),
            )
            return
        self._record_failure(job, error)

    def _record_failure(self, job: Job, error: ArchiverError) -> None:
        if isinstance(error, Reported):  # each destination's own failure, named
            for storage, reason in error.failures:
                self._fail_destination(job.stack_uid, job.backup_id, storage, reason)
        else:
            self._fail(job.stack_uid, job.backup_id, redact(str(error)))
        self._progress.finish(job.keys.tar, ok=False)

    async def _archive_due(self, job: Job, attempt: Attempt) -> None:
        """Adopt, fill in, download: each destination that lacks the backup, the cheapest way."""
        copies_before = self._fill.made_for(job)
        missing = await self._adopt_existing(job)
        if missing and job.holders:
            sources = await self._fill.sources(job)
            missing = await self._fill.fill_same_form(job, sources, missing, self._no_progress)
            if missing and job.backup is None:
                missing = await self._fill.fill_converted(job, sources, missing, self._no_progress)
        downloaded = False
        if missing and job.backup is not None:
            size, downloaded = await self._fetcher.fetch(job, missing, attempt)
            self._summary.bytes += size
        if downloaded or self._fill.made_for(job) > copies_before:
            self._summary.archived += 1

    @staticmethod
    def _no_progress(_count: int) -> None:
        """Copies between destinations are not drawn (downloads are)."""

    async def _adopt_existing(self, job: Job) -> list[Destination]:
        """A manifest already in a destination (state lost, or a crash after the manifest)
        counts; return the destinations still lacking the backup."""
        missing, adopted = [], 0
        for destination in job.missing:
            try:
                record = await record_from_manifest(
                    destination.storage, job.keys.manifest, destination.name
                )
            except (StorageError, OSError) as error:
                self._fail_destination(job.stack_uid, job.backup_id, destination.name,
                                       redact(str(error)))
                continue
            if record is None:
                missing.append(destination)
                continue
            self._rt.state.archived.record(record)
            adopted += 1
            log.info("backup already in storage; recorded", storage=destination.name)
        if adopted == len(job.missing):  # not when a destination failed to answer
            self._summary.already += 1
        return missing

    async def _prune_after_pass(self) -> None:
        """Prune each destination whose `after_pass` says so, after a pass that archived
        everything due."""
        settings = self._rt.settings
        pruning = [d for d in self._usable if prunes_after_pass(settings, d.settings)]
        if not pruning:
            return
        if not self._summary.ok or self._stop.is_set():
            log.info("no prune after this pass: it did not archive everything due")
            return
        for destination in pruning:
            copies = self._rt.state.archived.all(destination.name)
            plan = plan_prune(partial(_policy, settings, destination), copies)
            outcome = await Pruner(self._rt.state, destination).carry_out(plan)
            self._summary.pruned += outcome.removed
            self._summary.failed.extend(outcome.failures)

    def _record_stack_successes(self) -> None:
        """Every stack whose due backups are all archived now succeeded (freshness metrics).

        Not when stopping: backups not started were left for the next pass.
        """
        if self._stop.is_set():
            return
        failed = {failure.stack_uid for failure in self._summary.failed}
        now = datetime.now(UTC)
        for stack_uid in self._planned_stacks:
            if stack_uid not in failed:
                self._rt.state.runs.record_stack_success(stack_uid, now)

    def _fail(self, stack_uid: str, backup_id: int | None, reason: str) -> None:
        self._summary.failed.append(Failure(stack_uid, backup_id, reason))
        log.error("could not archive", stack_uid=stack_uid, backup_id=backup_id, reason=reason)

    def _fail_destination(self, stack_uid: str, backup_id: int, storage: str, reason: str) -> None:
        self._summary.failed.append(Failure(stack_uid, backup_id, reason, storage))
        log.error("could not archive in a destination", stack_uid=stack_uid,
                  backup_id=backup_id, storage=storage, reason=reason)


def _waiting_for_prune(pid: str) -> None:
    log.info("a prune is running on this state; the pass starts when it ends", pid=pid)


def _policy(settings: Settings, destination: Destination, stack_uid: str) -> RetentionPolicy | None:
    return policy_for(settings, stack_uid, destination.settings)


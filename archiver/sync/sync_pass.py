"""One pass: plan (API -> what is new) -> transfer -> commit (manifest, then state) -> report.

This is the only module where Cloud 66, storage and state meet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from archiver.cloud66.models import Backup, BackupFile, Listing, Stack
from archiver.cloud66.parts import join_order
from archiver.config.settings import StackSettings
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
from archiver.model.layout import ENCRYPTED_SUFFIX, BackupKeys, backup_keys, safe_component
from archiver.model.manifest import Manifest, utc_now_iso
from archiver.model.summary import Failure, PassSummary
from archiver.service.observers import tell_observers
from archiver.state.records import PendingCommit
from archiver.sync.progress import PassProgress
from archiver.sync.room import RoomLedger
from archiver.sync.runtime import Runtime
from archiver.sync.watch_step import WatchStep
from archiver.transfer import commit
from archiver.transfer import resume as transfers
from archiver.transfer.download import PartSource
from archiver.transfer.join import JoinedResult, resumable

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class _Job:
    """A backup that is due, with where it goes."""

    stack_uid: str
    backup: Backup
    keys: BackupKeys


@dataclass
class _Attempt:
    """One try at a backup: how big it is known to be, how many of its bytes were written."""

    size: int = 0
    written: int = 0

    @property
    def lacking(self) -> int | None:
        """Bytes it still needed (a lower bound before every part's size is known)."""
        return max(0, self.size - self.written) if self.size else None


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
        # The watch judges what the plan read; without [discover] every stack is known.
        self._watch = WatchStep(runtime)
        self._every_stack_known = not runtime.settings.discover.enabled
        settings = runtime.settings.transfer
        # Backups in flight: each holds an open upload, so bound them like downloads.
        self._backups_in_flight = asyncio.Semaphore(settings.max_concurrent_downloads)
        # Out of room: what failed uploads gave back, and who may try again (archiver.sync.room).
        self._room: RoomLedger[_Job] = RoomLedger()

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
        try:
            await remove_expired_staging(self._rt.storage)
            # Before the plan reads the state: a finished commit makes its backup archived.
            unfinished = await commit.settle(self._rt.state, self._rt.storage)
            jobs = await self._plan()
            due = {(job.stack_uid, job.backup.id) for job in jobs}
            self._report_unfinished(unfinished, due)
            await transfers.keep_only_due(self._rt.state, self._rt.storage, due)
            await self._archive_all(jobs)
            self._record_stack_successes()
            await self._watch.judge(self._planned_stacks, every_stack_known=self._every_stack_known)
            await self._prune_after_pass()
            await self._watch.tell()
        except AuthError as error:
            self._summary.auth_error = error
            log.error("the Cloud 66 API refused the token", error=str(error))
        except Stopped:
            log.info("stopping: the rest of the pass is left for the next one")
            self._summary.stopped = True
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

    def _report_unfinished(
        self, unfinished: list[tuple[PendingCommit, StorageError | OSError]],
        due: set[tuple[str, int]],
    ) -> None:
        """A commit that could not be finished fails its backup, unless the backup is due
        now (this pass tries it again and reports how that went)."""
        for pending, error in unfinished:
            if (pending.stack_uid, pending.backup_id) not in due:
                reason = f"an interrupted commit could not be finished: {redact(str(error))}"
                self._fail(pending.stack_uid, pending.backup_id, reason)

    # -- plan ---------------------------------------------------------------------------

    async def _plan(self) -> list[_Job]:
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

    async def _plan_stack(self, stack: StackSettings) -> list[_Job]:
        with structlog.contextvars.bound_contextvars(stack_uid=stack.uid):
            try:
                listing = await self._list_backups(stack)
            except AuthError:
                raise
            except ApiError as error:
                self._fail(stack.uid, None, f"could not list backups: {redact(str(error))}")
                return []
            self._watch.read(stack, listing)
            return self._due(stack.uid, listing.items)

    async def _list_backups(self, stack: StackSettings) -> Listing[Backup]:
        # One db_type can be filtered by the API (fewer pages); several are filtered here,
        # because one unfiltered listing costs fewer requests than one per type.
        only_one = stack.db_types[0] if stack.db_types and len(stack.db_types) == 1 else None
        listing = await self._rt.client.read_backups(stack.uid, db_type=only_one, group=stack.group)
        if stack.db_types:
            wanted = [backup for backup in listing.items if backup.db_type in stack.db_types]
            listing = Listing(wanted, listing.complete)
        return listing

    def _due(self, stack_uid: str, backups: Sequence[Backup]) -> list[_Job]:
        archived = self._rt.state.archived.ids(stack_uid)
        # Pruned by retention: Cloud 66 may list them for a long while yet.
        pruned = self._rt.state.pruned.ids(stack_uid)
        jobs = []
        for backup in backups:
            if backup.id in archived:
                self._summary.already += 1
            elif backup.id in pruned:
                continue
            elif not backup.is_ok:
                self._skip(stack_uid, backup)
            else:
                encrypted = bool(self._rt.recipients)
                jobs.append(_Job(stack_uid, backup, _keys_for(stack_uid, backup, encrypted)))
        return jobs

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

    async def _archive_all(self, jobs: list[_Job]) -> None:
        """Every due backup, side by side; then, one at a time, those that ran out of room
        while others' partial uploads held it and that the room given back since may fit."""
        if jobs:
            log.info("backups due", count=len(jobs))
        await self._archive_each(jobs)
        again, given_up = self._room.take()
        for job, error in given_up:
            self._record_failure(job, error)
        for job in again:  # alone: no other upload competes for the room given back
            log.info("room was given back: trying a backup that ran out of it again",
                     stack_uid=job.stack_uid, backup_id=job.backup.id)
            await self._archive_each([job], last_try=True)

    async def _archive_each(self, jobs: list[_Job], *, last_try: bool = False) -> None:
        results = await asyncio.gather(
            *(self._archive_one(job, last_try=last_try) for job in jobs), return_exceptions=True
        )
        for result in results:
            if isinstance(result, AuthError):
                raise result
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result

    async def _archive_one(self, job: _Job, *, last_try: bool) -> None:
        backup = job.backup
        context = {"stack_uid": job.stack_uid, "backup_id": backup.id, "db_type": backup.db_type}
        attempt = _Attempt()
        with structlog.contextvars.bound_contextvars(**context):
            try:
                async with self._stop.holding(self._backups_in_flight):
                    await self._archive_due(job, attempt)
            except Stopped:
                self._progress.finish(job.keys.tar, ok=False)
                log.info("stopping: backup left for the next pass")
                self._summary.stopped = True
            except AuthError:
                raise
            except ArchiverError as error:
                self._failed(job, attempt, error, last_try=last_try)
            except OSError as error:  # a backend's raw error: name it, keep going
                self._failed(job, attempt, PermanentStorageError(str(error)), last_try=last_try)
            except Exception as error:  # a bug must cost one backup, not the pass
                log.exception("unexpected error archiving a backup")
                self._record_failure(job, ArchiverError(f"internal error: {error!r}"))

    def _failed(
        self, job: _Job, attempt: _Attempt, error: ArchiverError, *, last_try: bool
    ) -> None:
        """A try failed: unless its upload is kept to resume, the room it held is given back;
        one that ran out of room waits to see whether others give back enough."""
        kept = resumable(error) and not job.keys.tar.endswith(ENCRYPTED_SUFFIX)
        if not kept:
            self._room.gave_back(job, attempt.written)
        if isinstance(error, StorageFull) and not last_try:
            self._room.ran_out(job, error, attempt.lacking)
            self._progress.finish(job.keys.tar, ok=False)
            log.warning(
                "storage is full; tried again in this pass if other backups give room back",
                stack_uid=job.stack_uid, backup_id=job.backup.id, reason=redact(str(error)),
            )
            return
        self._record_failure(job, error)

    def _record_failure(self, job: _Job, error: ArchiverError) -> None:
        reason = redact(str(error))
        self._fail(job.stack_uid, job.backup.id, reason)
        self._progress.finish(job.keys.tar, ok=False)

    async def _archive_due(self, job: _Job, attempt: _Attempt) -> None:
        if await self._adopt_existing(job):
            return
        files = join_order(await self._rt.client.list_files(job.stack_uid, job.backup.id))
        description = f"{job.stack_uid[:8]} {job.backup.db_type} #{job.backup.id}"
        self._progress.add_backup(job.keys.tar, description, total=None)
        # Debug: at info a person sees the backup once, when it is archived (and its bar).
        log.debug("archiving backup", files=len(files), database_name=job.backup.database_name)
        timed = self._rt.metrics.transfer() if self._rt.metrics is not None else nullcontext()
        with timed:
            joined, pending = await self._transfer(job, files, attempt)
        record = await commit.finish(self._rt.state, self._rt.storage, pending)
        self._summary.archived += 1
        self._summary.bytes += joined.size
        self._progress.finish(job.keys.tar, ok=True)
        log.info(
            "backup archived", size=joined.size, sha256=joined.sha256, location=record.location
        )

    async def _transfer(
        self, job: _Job, files: Sequence[BackupFile], attempt: _Attempt
    ) -> tuple[JoinedResult, PendingCommit]:
        """Join the backup's files into storage, resuming an unfinished upload of it; the
        commit is recorded (`archiver.transfer.commit`) before the data reaches its final name."""
        state, backup_id = self._rt.state, job.backup.id
        encrypted = job.keys.tar.endswith(ENCRYPTED_SUFFIX)
        known = (
            [] if encrypted
            else transfers.resume_or_begin(state, job.stack_uid, backup_id, job.keys.tar)
        )
        pending: list[PendingCommit] = []

        def intend(joined: JoinedResult) -> None:
            manifest = _manifest_for(job, joined, self._rt.encryption_info)
            pending.append(commit.intend(state, job.keys, manifest))

        def size_known(size: int) -> None:
            attempt.size += size
            self._progress.set_total(job.keys.tar, attempt.size)

        def written(count: int) -> None:
            attempt.written += count
            self._progress.advance(job.keys.tar, count)

        try:
            joined = await self._rt.joiner.archive(
                job.keys.tar,
                self._part_sources(job, files),
                on_size=size_known,
                on_bytes=written,
                encrypt_to=self._rt.encryption if encrypted else None,
                known=known,
                on_facts=None if encrypted else transfers.recorder(state, job.stack_uid, backup_id),
                before_commit=intend,
            )
        except BaseException as error:
            if not resumable(error):
                state.transfers.end(job.stack_uid, backup_id)
            if pending:  # the data commit failed: it may have left data under the final name
                await asyncio.shield(commit.abandon(state, self._rt.storage, pending[0]))
            raise
        return joined, pending[0]

    def _part_sources(self, job: _Job, files: Sequence[BackupFile]) -> list[PartSource]:
        client = self._rt.client

        def part_source(file_id: str) -> PartSource:
            async def fetch() -> str:
                return await client.public_url(job.stack_uid, job.backup.id, file_id)

            name = safe_component(next(f.name for f in files if f.id == file_id) or file_id)
            return PartSource(id=file_id, name=name, fresh_url=fetch)

        return [part_source(file.id) for file in files]

    async def _adopt_existing(self, job: _Job) -> bool:
        """A manifest already in storage (state lost, or a crash after the manifest) counts."""
        record = await record_from_manifest(self._rt.storage, job.keys.manifest)
        if record is None:
            return False
        self._rt.state.archived.record(record)
        self._summary.already += 1
        log.info("backup already in storage; recorded")
        return True

    async def _prune_after_pass(self) -> None:
        """`[retention] after_pass`: prune after a pass that archived everything due."""
        retention = self._rt.settings.retention
        if retention is None or not retention.after_pass:
            return
        if not self._summary.ok or self._stop.is_set():
            log.info("no prune after this pass: it did not archive everything due")
            return
        plan = plan_prune(self._rt.settings, self._rt.state.archived.all())
        failures = await Pruner(self._rt.state, self._rt.storage).carry_out(plan)
        self._summary.pruned = len(plan.remove) - len(failures)
        self._summary.failed.extend(failures)

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


def _waiting_for_prune(pid: str) -> None:
    log.info("a prune is running on this state; the pass starts when it ends", pid=pid)


def _keys_for(stack_uid: str, backup: Backup, encrypted: bool) -> BackupKeys:
    return backup_keys(
        stack_uid=stack_uid,
        db_type=backup.db_type,
        database_name=backup.database_name,
        backup_date=backup.backup_date_iso,
        backup_id=backup.id,
        encrypted=encrypted,
    )


def _manifest_for(
    job: _Job, joined: JoinedResult, encryption: dict[str, Any] | None
) -> Manifest:
    backup = job.backup
    date = backup.backup_date_iso
    return Manifest(
        stack_uid=job.stack_uid,
        backup_id=backup.id,
        db_type=str(backup.db_type),
        database_name=str(backup.database_name),
        backup_date=date.isoformat().replace("+00:00", "Z") if date else None,
        size=joined.size,
        sha256=joined.sha256,
        parts=joined.parts,
        archived_at=utc_now_iso(),
        file=job.keys.tar.rsplit("/", 1)[-1],
        source=backup.raw,
        stored_size=joined.stored_size,
        stored_sha256=joined.stored_sha256,
        encryption=encryption if joined.stored_sha256 is not None else None,
    )

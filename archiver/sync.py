"""One pass: plan (API -> what is new) -> transfer -> commit (manifest, then state) -> report.

This is the only module where Cloud 66, storage and state meet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from archiver import transfers
from archiver.cloud66.models import Backup, BackupFile, Stack
from archiver.cloud66.parts import join_order
from archiver.config import StackSettings
from archiver.download import PartSource
from archiver.errors import (
    ApiError,
    ArchiverError,
    AuthError,
    PermanentStorageError,
    StorageError,
)
from archiver.import_staging import remove_expired_staging
from archiver.join import JoinedResult, resumable
from archiver.layout import ENCRYPTED_SUFFIX, BackupKeys, backup_keys, safe_component
from archiver.log import redact
from archiver.manifest import ArchivedBackup, Manifest, utc_now_iso
from archiver.observers import tell_observers
from archiver.progress import PassProgress
from archiver.prune import Pruner, plan_prune
from archiver.rebuild import record_from_manifest
from archiver.runtime import Runtime
from archiver.stopping import Stopped
from archiver.summary import Failure, PassSummary

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class _Job:
    """A backup that is due, with where it goes."""

    stack_uid: str
    backup: Backup
    keys: BackupKeys


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
        settings = runtime.settings.transfer
        # Backups in flight: each holds an open upload, so bound them like downloads.
        self._backups_in_flight = asyncio.Semaphore(settings.max_concurrent_downloads)

    async def run(self) -> PassSummary:
        """Plan, transfer and commit; never raises for one stack's or one backup's trouble."""
        started = time.monotonic()
        log.info("pass started")
        await tell_observers(self._rt.observers, lambda observer: observer.pass_started())
        try:
            await remove_expired_staging(self._rt.storage)
            jobs = await self._plan()
            due = {(job.stack_uid, job.backup.id) for job in jobs}
            await transfers.keep_only_due(self._rt.state, self._rt.storage, due)
            await self._archive_all(jobs)
            self._record_stack_successes()
            await self._prune_after_pass()
        except AuthError as error:
            self._summary.auth_error = error
            log.error("the Cloud 66 API refused the token", error=str(error))
        except Stopped:
            log.info("stopping: the rest of the pass is left for the next one")
        except StorageError as error:
            self._fail("*", None, f"storage unusable: {error}")
        finally:
            self._summary.seconds = time.monotonic() - started
            self._summary.finished_at = utc_now_iso()
            self._rt.state.record_run(self._summary.as_run_record())
        log.info("pass finished", summary=self._summary.one_line(), ok=self._summary.ok)
        summary = self._summary
        await tell_observers(self._rt.observers, lambda observer: observer.pass_finished(summary))
        return summary

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
            return await self._rt.client.list_stacks()
        except AuthError:
            raise
        except ApiError as error:
            self._fail("*", None, f"could not list stacks for [discover]: {redact(str(error))}")
            return []

    async def _plan_stack(self, stack: StackSettings) -> list[_Job]:
        with structlog.contextvars.bound_contextvars(stack_uid=stack.uid):
            try:
                backups = await self._list_backups(stack)
            except AuthError:
                raise
            except ApiError as error:
                self._fail(stack.uid, None, f"could not list backups: {redact(str(error))}")
                return []
            return self._due(stack.uid, backups)

    async def _list_backups(self, stack: StackSettings) -> list[Backup]:
        # One db_type can be filtered by the API (fewer pages); several are filtered here,
        # because one unfiltered listing costs fewer requests than one per type.
        only_one = stack.db_types[0] if stack.db_types and len(stack.db_types) == 1 else None
        backups = await self._rt.client.list_backups(stack.uid, db_type=only_one, group=stack.group)
        if stack.db_types:
            backups = [backup for backup in backups if backup.db_type in stack.db_types]
        return backups

    def _due(self, stack_uid: str, backups: Sequence[Backup]) -> list[_Job]:
        archived = self._rt.state.archived_ids(stack_uid)
        # Pruned by retention: Cloud 66 may list them for a long while yet.
        pruned = self._rt.state.pruned_ids(stack_uid)
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
        if self._rt.state.note_skipped(stack_uid, backup.id, reason):
            log.warning(
                "backup is not Ok upstream; skipped",
                backup_id=backup.id,
                db_type=backup.db_type,
                backup_status=backup.backup_status,
                backup_result=backup.backup_result,
            )

    # -- transfer and commit -----------------------------------------------------------

    async def _archive_all(self, jobs: list[_Job]) -> None:
        if jobs:
            log.info("backups due", count=len(jobs))
        results = await asyncio.gather(
            *(self._archive_one(job) for job in jobs), return_exceptions=True
        )
        for result in results:
            if isinstance(result, AuthError):
                raise result
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result

    async def _archive_one(self, job: _Job) -> None:
        backup = job.backup
        context = {"stack_uid": job.stack_uid, "backup_id": backup.id, "db_type": backup.db_type}
        with structlog.contextvars.bound_contextvars(**context):
            try:
                async with self._stop.holding(self._backups_in_flight):
                    await self._archive_due(job)
            except Stopped:
                self._progress.finish(job.keys.tar, ok=False)
                log.info("stopping: backup left for the next pass")
            except AuthError:
                raise
            except ArchiverError as error:
                self._record_failure(job, error)
            except OSError as error:  # a backend's raw error: name it, keep going
                self._record_failure(job, PermanentStorageError(str(error)))
            except Exception as error:  # a bug must cost one backup, not the pass
                log.exception("unexpected error archiving a backup")
                self._record_failure(job, ArchiverError(f"internal error: {error!r}"))

    def _record_failure(self, job: _Job, error: ArchiverError) -> None:
        reason = redact(str(error))
        self._fail(job.stack_uid, job.backup.id, reason)
        self._progress.finish(job.keys.tar, ok=False)

    async def _archive_due(self, job: _Job) -> None:
        if await self._adopt_existing(job):
            return
        files = join_order(await self._rt.client.list_files(job.stack_uid, job.backup.id))
        description = f"{job.stack_uid[:8]} {job.backup.db_type} #{job.backup.id}"
        self._progress.add_backup(job.keys.tar, description, total=None)
        log.info("archiving backup", files=len(files), database_name=job.backup.database_name)
        known_size = 0

        def part_size_known(size: int) -> None:
            nonlocal known_size
            known_size += size
            self._progress.set_total(job.keys.tar, known_size)

        with self._rt.metrics.transfer():
            joined = await self._transfer(job, files, part_size_known)
        record = await self._commit(job, joined)
        self._summary.archived += 1
        self._summary.bytes += joined.size
        self._progress.finish(job.keys.tar, ok=True)
        log.info(
            "backup archived", size=joined.size, sha256=joined.sha256, location=record.location
        )

    async def _transfer(
        self, job: _Job, files: Sequence[BackupFile], on_size: Callable[[int], None]
    ) -> JoinedResult:
        """Join the backup's files into storage, resuming an unfinished upload of it."""
        state, backup_id = self._rt.state, job.backup.id
        encrypted = job.keys.tar.endswith(ENCRYPTED_SUFFIX)
        known = [] if encrypted else transfers.start(state, job.stack_uid, backup_id, job.keys.tar)
        try:
            return await self._rt.joiner.archive(
                job.keys.tar,
                self._part_sources(job, files),
                on_size=on_size,
                on_bytes=lambda count: self._progress.advance(job.keys.tar, count),
                encrypt_to=self._rt.encryption if encrypted else None,
                known=known,
                on_facts=None if encrypted else transfers.recorder(state, job.stack_uid, backup_id),
            )
        except BaseException as error:
            if not resumable(error):
                state.end_transfer(job.stack_uid, backup_id)
            raise

    def _part_sources(self, job: _Job, files: Sequence[BackupFile]) -> list[PartSource]:
        client = self._rt.client

        def fresh_url(file_id: str) -> PartSource:
            async def fetch() -> str:
                return await client.public_url(job.stack_uid, job.backup.id, file_id)

            name = safe_component(next(f.name for f in files if f.id == file_id) or file_id)
            return PartSource(id=file_id, name=name, fresh_url=fetch)

        return [fresh_url(file.id) for file in files]

    async def _commit(self, job: _Job, joined: JoinedResult) -> ArchivedBackup:
        """Manifest after the data, state after the manifest: each step safe to repeat."""
        storage = self._rt.storage
        manifest = _manifest_for(job, joined, self._rt.encryption_info)
        await storage.write_small(job.keys.manifest, manifest.to_json())
        record = self._archived_record(job, manifest)
        self._rt.state.record_archived(record)
        return record

    def _archived_record(self, job: _Job, manifest: Manifest) -> ArchivedBackup:
        return manifest.archived_record(
            tar_key=job.keys.tar,
            manifest_key=job.keys.manifest,
            location=self._rt.storage.location(job.keys.tar),
        )

    async def _adopt_existing(self, job: _Job) -> bool:
        """A manifest already in storage (state lost, or a crash after the manifest) counts."""
        record = await record_from_manifest(self._rt.storage, job.keys.manifest)
        if record is None:
            return False
        self._rt.state.record_archived(record)
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
        plan = plan_prune(self._rt.settings, self._rt.state.archived())
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
                self._rt.state.record_stack_success(stack_uid, now)

    def _fail(self, stack_uid: str, backup_id: int | None, reason: str) -> None:
        self._summary.failed.append(Failure(stack_uid, backup_id, reason))
        log.error("could not archive", stack_uid=stack_uid, backup_id=backup_id, reason=reason)


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

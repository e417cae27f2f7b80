"""A backup downloaded from Cloud 66 once, into every destination that lacks it.

The backup's files (fresh public URLs) are joined in order (`archiver.transfer.join`)
into a `FanOut` over the destinations: each destination's commit is recorded just
before its data reaches the final name, then finished right after it (manifest, state
row, Object Lock) on its own, beside the other destinations' (`archiver.sync.commit`).
A destination that fails is named; the others keep their copy. An unfinished upload is
resumed where every destination's durable bytes allow (`archiver.transfer.resume`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import structlog

from archiver.cloud66.models import BackupFile
from archiver.cloud66.parts import join_order
from archiver.core.errors import ArchiverError
from archiver.core.secrets import redact
from archiver.model.layout import safe_component
from archiver.model.manifest import ArchivedBackup
from archiver.storage.destinations import Destination
from archiver.sync.commit import Committer, FailDestination, downloaded_manifest
from archiver.sync.plan import Job
from archiver.sync.progress import PassProgress
from archiver.sync.runtime import Runtime
from archiver.transfer import resume as transfers
from archiver.transfer.download import PartSource
from archiver.transfer.fan_out import FanOut, Member
from archiver.transfer.join import BackupJoiner, JoinedResult, resumable

log = structlog.get_logger(__name__)


class Reported(ArchiverError):
    """Every destination failed on its own side: `failures` says (destination, why) for each,
    `cause` is the first error (what decides whether the backup is tried again)."""

    def __init__(self, cause: BaseException, failures: list[tuple[str, str]]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.failures = failures


@dataclass
class Attempt:
    """One try at a backup: how big it is known to be, how many of its bytes were written."""

    size: int = 0
    written: int = 0

    @property
    def lacking(self) -> int | None:
        """Bytes it still needed (a lower bound before every part's size is known)."""
        return max(0, self.size - self.written) if self.size else None


class Fetcher:
    """Downloads backups into destinations and commits each copy."""

    def __init__(
        self,
        runtime: Runtime,
        committer: Committer,
        progress: PassProgress,
        fail: FailDestination,
        several: Callable[[], bool],
    ) -> None:
        self._rt = runtime
        self._committer = committer
        self._progress = progress
        self._fail = fail
        self._several = several

    async def fetch(
        self, job: Job, destinations: Sequence[Destination], attempt: Attempt
    ) -> tuple[int, bool]:
        """(bytes downloaded, whether some destination committed the backup)."""
        assert job.backup is not None
        backup = job.backup
        files = join_order(await self._rt.client.list_files(job.stack_uid, backup.id))
        self._progress.add_backup(job.keys.tar, f"{job.label} {backup.db_type}", total=None)
        # Debug: at info a person sees the backup once, when it is archived (and its bar).
        log.debug("archiving backup", files=len(files), database_name=backup.database_name,
                  destinations=[d.name for d in destinations])
        joined: list[JoinedResult] = []
        finished: dict[str, ArchivedBackup] = {}

        def intend(member: Member) -> None:
            facts = joined[0]
            manifest = downloaded_manifest(
                job.stack_uid, backup, member, facts.size, facts.sha256, facts.parts
            )
            self._committer.intend(member, job.keys, manifest)

        async def conclude(member: Member) -> None:
            record = await self._committer.conclude(member, job.stack_uid, job.backup_id)
            if record is not None:
                finished[member.destination.name] = record

        fan_out = FanOut(destinations, job.keys.tar, before_commit=intend,
                         after_commit=conclude, encryptions=self._rt.encryptions)
        metrics = self._rt.metrics
        with metrics.transfer() if metrics is not None else nullcontext():
            result = await self._transfer(job, files, fan_out, attempt, joined.append)
        self._report_failed(job, fan_out)
        records = [(d, finished[d.name]) for d in destinations if d.name in finished]
        self._progress.finish(job.keys.tar, ok=bool(records))
        if records:
            destination, first = records[0]
            several = {"storage": [d.name for d, _ in records]} if self._several() else {}
            log.info("backup archived", size=result.size, sha256=result.sha256,
                     location=destination.location(first.tar_key), **several)
        return result.size, bool(records)

    def _report_failed(self, job: Job, fan_out: FanOut) -> None:
        """Name the destinations that failed (each commit was finished or taken back at once)."""
        for member in fan_out.failed():
            self._fail(job.stack_uid, job.backup_id, member.destination.name,
                       redact(str(member.error)))

    async def _transfer(
        self,
        job: Job,
        files: Sequence[BackupFile],
        fan_out: FanOut,
        attempt: Attempt,
        before_commit: Callable[[JoinedResult], None],
    ) -> JoinedResult:
        """Join the backup's files into every destination, resuming an unfinished upload."""
        state, backup_id = self._rt.state, job.backup_id
        encrypted = fan_out.encrypted
        known = (
            [] if encrypted
            else transfers.resume_or_begin(state, job.stack_uid, backup_id, job.keys.tar)
        )

        def size_known(size: int) -> None:
            attempt.size += size
            self._progress.set_total(job.keys.tar, attempt.size)

        def written(count: int) -> None:
            attempt.written += count
            self._progress.advance(job.keys.tar, count)

        try:
            return await BackupJoiner(self._rt.downloader, fan_out).archive(
                job.keys.tar,
                self._part_sources(job, files),
                on_size=size_known,
                on_bytes=written,
                known=known,
                on_facts=None if encrypted else transfers.recorder(state, job.stack_uid, backup_id),
                before_commit=before_commit,
            )
        except BaseException as error:
            await self._failed(job, fan_out, error)
            raise

    async def _failed(self, job: Job, fan_out: FanOut, error: BaseException) -> None:
        """The download or every commit failed: records and data under final names go back.
        When every destination failed on its own side, `Reported` names each (the pass
        records them, or tries the backup again when room may have come back); else the
        destinations that failed before the download did are named here."""
        if not resumable(error):
            self._rt.state.transfers.end(job.stack_uid, job.backup_id)
        await self._committer.abandon(fan_out.members, job.stack_uid, job.backup_id)
        failures = [(m.destination.name, redact(str(m.error))) for m in fan_out.failed()]
        if any(error is member.error for member in fan_out.failed()):
            raise Reported(error, failures) from None
        for name, reason in failures:
            self._fail(job.stack_uid, job.backup_id, name, reason)

    def _part_sources(self, job: Job, files: Sequence[BackupFile]) -> list[PartSource]:
        client = self._rt.client

        def part_source(file_id: str) -> PartSource:
            async def fetch() -> str:
                return await client.public_url(job.stack_uid, job.backup_id, file_id)

            name = safe_component(next(f.name for f in files if f.id == file_id) or file_id)
            return PartSource(id=file_id, name=name, fresh_url=fetch)

        return [part_source(file.id) for file in files]


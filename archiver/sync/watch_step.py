"""The watch's part of a pass: what the pass read, judged; stack names; findings told.

The pass hands over each stack's list as it reads it (`read`), and the stacks of
`[discover]` (`discovered`, whose names come for free). After the transfers,
`judge` records names (from `GET /stacks` at most once a day otherwise) and
judges every stack whose list was read; after the prune, `tell` delivers what
the outbox holds. Neither ever raises: the watch is never the pass's problem,
and adds no API call to a pass beyond that daily read of the names.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import structlog

from archiver.cloud66.models import Backup, Listing, Stack
from archiver.config.settings import Settings, StackSettings
from archiver.core.errors import ApiError
from archiver.core.stopping import Stopped
from archiver.model.manifest import ArchivedBackup
from archiver.service.telling import FindingsTeller
from archiver.state.findings import Finding, Outbox
from archiver.sync.runtime import Runtime
from archiver.watch.judge import judge_stack
from archiver.watch.messages import describe, finding_event
from archiver.watch.reading import Listed, StackReading, Thresholds

log = structlog.get_logger(__name__)

NAMES_EVERY = timedelta(days=1)
NAMES_TIMEOUT_SECONDS = 60.0
TELL_TIMEOUT_SECONDS = 120.0


class WatchStep:
    """Collects a pass's readings, then judges and tells."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._readings: dict[str, StackReading] = {}
        self._discovered: Listing[Stack] | None = None
        alerts = runtime.alerts
        self._teller = FindingsTeller(runtime.settings.notify, alerts) if alerts else None

    @property
    def enabled(self) -> bool:
        """`[watch] enabled`."""
        return self._rt.settings.watch.enabled

    def read(self, stack: StackSettings, listing: Listing[Backup]) -> None:
        """What the pass read of a stack (its backups already cut to the watched db_types)."""
        self._readings[stack.uid] = StackReading(
            stack_uid=stack.uid,
            listing="" if stack.group is None else str(stack.group),
            db_types=tuple(stack.db_types) if stack.db_types else None,
            backups=tuple(_listed(backup) for backup in listing.items),
            complete=listing.complete,
        )

    def discovered(self, stacks: Listing[Stack]) -> None:
        """The stacks `[discover]` listed: their names, without another request."""
        self._discovered = stacks

    async def judge(self, planned: Sequence[str], *, every_stack_known: bool) -> None:
        """Refresh names; judge each stack read; forget stacks no longer archived."""
        try:
            now = datetime.now(UTC)
            if not self._rt.stop.is_set():
                await self._refresh_names(now)
            if not self.enabled:
                self._forget_everything()
                return
            self._judge_all(now)
            if every_stack_known:
                self._forget_stacks_except(planned)
        except Stopped:
            log.info("stopping: the watch judges at the next pass")
        except Exception:  # a bug in the watch must not cost the pass
            log.exception("the watch failed; the pass is not affected")

    async def tell(self) -> None:
        """Deliver what each channel has not taken yet (sent again next pass if refused)."""
        if not self.enabled or self._teller is None or self._rt.stop.is_set():
            return
        try:
            await asyncio.wait_for(self._teller.deliver(self._outbox()), TELL_TIMEOUT_SECONDS)
        except Exception as error:  # never the pass's problem; the outbox keeps the rest
            log.warning("telling findings failed; left for the next pass", error=repr(error))

    # -- names --------------------------------------------------------------------------

    async def _refresh_names(self, now: datetime) -> None:
        names = self._rt.state.stack_names
        if self._discovered is not None:
            names.record(_name_rows(self._discovered.items), now)
            return
        last = names.read_at()
        if last is not None and now - last < NAMES_EVERY:
            return
        if self._rt.budget.remaining < 1:
            return  # names can wait; the budget is for backups
        names.note_read(now)  # a failed read counts too: at most one a day
        try:
            stacks = await asyncio.wait_for(self._rt.client.list_stacks(), NAMES_TIMEOUT_SECONDS)
        except (ApiError, TimeoutError) as error:
            log.warning("could not read the stacks' names; tried again tomorrow", error=str(error))
            return
        names.record(_name_rows(stacks), now)

    # -- judging ------------------------------------------------------------------------

    def _judge_all(self, now: datetime) -> None:
        state = self._rt.state
        archived: dict[str, list[ArchivedBackup]] = {}
        for record in state.archived.backups():  # backups, not copies (several destinations)
            archived.setdefault(record.stack_uid, []).append(record)
        outbox = self._outbox()
        names = state.stack_names.names()
        for uid, reading in self._readings.items():
            new = judge_stack(
                state, reading, self._thresholds(uid),
                archived=archived.get(uid, []), outbox=outbox, now=now,
            )
            for finding in new:
                _log_new(finding, names.get(uid))

    def _thresholds(self, stack_uid: str) -> Thresholds:
        settings = self._rt.settings
        return Thresholds(_max_backup_age(settings, stack_uid), settings.watch.shrink_ratio)

    def _outbox(self) -> Outbox:
        state = self._rt.state
        names = state.stack_names.names()
        hostname = socket.gethostname()

        def event_for(finding: Finding) -> dict[str, object]:
            return finding_event(finding, names.get(finding.stack_uid), hostname)

        channels = self._teller.channels if self._teller is not None else []
        return Outbox(state.database, channels, event_for)

    def _forget_stacks_except(self, planned: Sequence[str]) -> None:
        """Stacks no longer archived: nothing more to judge (missed ones stay until acked)."""
        state = self._rt.state
        state.seen.forget_stacks_except(planned)
        state.series.forget_stacks_except(planned)
        state.findings.clear(keep_stacks=planned)

    def _forget_everything(self) -> None:
        """`[watch] enabled = false`: no findings, nothing remembered, nothing to tell."""
        state = self._rt.state
        state.seen.forget_all()
        state.series.forget_all()
        state.findings.clear()


def _max_backup_age(settings: Settings, stack_uid: str) -> timedelta | None:
    """The stack's `watch.max_backup_age`, else `[watch] max_backup_age`; None: inferred."""
    override = next((s.watch for s in settings.stacks if s.uid == stack_uid), None)
    if override is not None and override.max_backup_age is not None:
        return override.max_backup_age
    return settings.watch.max_backup_age


def _listed(backup: Backup) -> Listed:
    # str() as the manifest writes them, so series match what the archive holds.
    return Listed(
        backup_id=backup.id,
        db_type=str(backup.db_type),
        database_name=str(backup.database_name),
        backup_date=backup.backup_date_iso,
        ok=backup.is_ok,
        result=backup.backup_result,
    )


def _name_rows(stacks: Sequence[Stack]) -> list[tuple[str, str | None, str | None]]:
    return [(stack.uid, stack.name, stack.environment) for stack in stacks]


def _log_new(finding: Finding, stack_name: str | None) -> None:
    title, text = describe(finding, stack_name)
    log.warning(
        "watch: " + title.removeprefix("c66-archiver: "),
        kind=finding.kind,
        stack_uid=finding.stack_uid,
        stack_name=stack_name,
        backup_id=finding.backup_id,
        detail=text,
    )

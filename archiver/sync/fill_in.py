"""Destinations that lack a backup filled in from other destinations' copies of it.

The contract's order, for each destination that lacks a backup some other
destination holds:
1. a copy of another destination's stored bytes, when both store it the same
   way (both plain, or encrypted to the same recipients): `fill_same_form`;
2. else a download, while Cloud 66 lists the backup (the pass does that);
3. else the plaintext from a copy: decrypted from an encrypted one with the
   identity (the source destination's `identity_file`, else `[encryption]`'s),
   or read from a plain one, then sealed again where the destination encrypts:
   `fill_converted`;
4. else it is reported, naming the destination, and the pass exits 1.
Every copy is checked against its source's manifest while it streams and is
committed only when it matches; a source that does not match is not used.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import structlog

from archiver.config.keys import Identity, load_identities
from archiver.config.settings import Settings
from archiver.core.errors import IntegrityError, StorageError
from archiver.core.secrets import redact
from archiver.lifecycle.rebuild import read_manifest
from archiver.state.store import StateStore
from archiver.storage.destinations import Destination
from archiver.sync.commit import Committer, FailDestination, copied_manifest
from archiver.sync.plan import Job
from archiver.transfer.copy import CopySource, copy_plaintext, copy_stored
from archiver.transfer.encryption import AgeEncryption
from archiver.transfer.fan_out import DESTINATION_ERRORS, FanOut, Member

log = structlog.get_logger(__name__)

ByteCallback = Callable[[int], None]


class FillIn:
    """Fills destinations in from the copies other destinations hold."""

    def __init__(
        self,
        settings: Settings,
        state: StateStore,
        committer: Committer,
        fail: FailDestination,
        encryptions: Mapping[str, AgeEncryption] | None = None,
    ) -> None:
        self._settings = settings
        self._encryptions = encryptions
        self._state = state
        self._committer = committer
        self._fail = fail
        self.copies_made = 0
        # Per backup, not per pass: several backups fill in at once.
        self._made: Counter[tuple[str, int]] = Counter()
        # Per backup, the sources that failed as sources and why (not read twice, and named).
        self._bad_sources: dict[tuple[str, int], dict[str, str]] = {}

    def made_for(self, job: Job) -> int:
        """How many copies of this job's backup were filled in so far in this pass."""
        return self._made[(job.stack_uid, job.backup_id)]

    async def sources(self, job: Job) -> list[CopySource]:
        """The holders' copies with their manifests, in the config's order (unreadable ones
        left out)."""
        records = {r.storage: r for r in self._state.archived.all(stack_uid=job.stack_uid)
                   if r.backup_id == job.backup_id}
        sources = []
        for holder in job.holders:
            record = records.get(holder.name)
            if record is None:
                continue
            try:
                manifest = await read_manifest(holder.storage, record.manifest_key, holder.name)
            except (StorageError, OSError) as error:
                log.warning("cannot read a copy's manifest", storage=holder.name,
                            error=redact(str(error)))
                continue
            if manifest is not None:
                sources.append(CopySource(holder, record, manifest))
        return sources

    async def fill_same_form(
        self,
        job: Job,
        sources: Sequence[CopySource],
        missing: Sequence[Destination],
        on_bytes: ByteCallback,
    ) -> list[Destination]:
        """Copy stored bytes to every destination that stores like some source; return the
        destinations still lacking the backup (no such source, or every one failed as a source)."""
        left = list(missing)
        for source in sources:
            targets = [d for d in left if d.stores_like(source.manifest.encryption)]
            if targets:
                done = await self._copy(job, source, targets, on_bytes, same_form=True)
                left = [d for d in left if d not in done]
        return left

    async def fill_converted(
        self,
        job: Job,
        sources: Sequence[CopySource],
        missing: Sequence[Destination],
        on_bytes: ByteCallback,
    ) -> list[Destination]:
        """Fill the rest from a plaintext: a plain copy, else a decrypted one; report what is
        left (Cloud 66 no longer lists the backup, so there is no other way)."""
        left = list(missing)
        bad = self._bad_sources.setdefault((job.stack_uid, job.backup_id), {})
        for source in sorted(sources, key=lambda s: s.manifest.encrypted):
            if not left:
                break
            identities = self._identities(source)
            if identities is None or source.destination.name in bad:
                continue
            done = await self._copy(job, source, left, on_bytes, identities=identities)
            left = [d for d in left if d not in done]
        for destination in left:
            reason = _why_not(sources, bad, self._identities)
            self._fail(job.stack_uid, job.backup_id, destination.name, reason)
        return left

    def _identities(self, source: CopySource) -> list[Identity] | None:
        """What decrypts `source` (nothing for a plain copy); None when there is nothing to use."""
        if not source.manifest.encrypted:
            return []
        own = source.destination.encryption
        configured = self._settings.encryption
        path = (own.identity_file if own else None) or (
            configured.identity_file if configured else None
        )
        if path is None:
            return None
        try:
            return load_identities(path)
        except ValueError as error:
            log.error("cannot use the identity file", path=str(path), error=str(error))
            return None

    async def _copy(
        self,
        job: Job,
        source: CopySource,
        targets: list[Destination],
        on_bytes: ByteCallback,
        *,
        same_form: bool = False,
        identities: Sequence[Identity] = (),
    ) -> set[Destination]:
        """One copy from `source` into `targets`; the destinations done with (filled, or failed
        on their own side); an empty set when the source itself failed."""
        finished: set[str] = set()

        def intend(member: Member) -> None:
            manifest = copied_manifest(source.manifest, member, same_form=same_form)
            self._committer.intend(member, job.keys, manifest)

        async def conclude(member: Member) -> None:
            if await self._committer.conclude(member, job.stack_uid, job.backup_id) is not None:
                finished.add(member.destination.name)

        fan_out = FanOut(targets, job.keys.tar, seal=not same_form, before_commit=intend,
                         after_commit=conclude, encryptions=self._encryptions)
        try:
            if same_form:
                await copy_stored(source, fan_out, on_bytes)
            else:
                await copy_plaintext(source, fan_out, identities, on_bytes)
        except (IntegrityError, *DESTINATION_ERRORS) as error:
            await self._committer.abandon(fan_out.members, job.stack_uid, job.backup_id)
            if not any(error is member.error for member in fan_out.failed()):
                log.warning("cannot fill in from this copy", storage=source.destination.name,
                            backup_id=job.backup_id, error=redact(str(error)))
                bad = self._bad_sources.setdefault((job.stack_uid, job.backup_id), {})
                bad[source.destination.name] = redact(str(error))
                return set()
        done: set[Destination] = set()
        for member in fan_out.failed():
            self._fail(job.stack_uid, job.backup_id, member.destination.name,
                       f"filling in from {source.destination.name!r}: {redact(str(member.error))}")
            done.add(member.destination)
        for member in fan_out.committed():
            if member.destination.name in finished:
                self.copies_made += 1
                self._made[(job.stack_uid, job.backup_id)] += 1
                log.info("filled in from another destination", backup_id=job.backup_id,
                         source=source.destination.name, storage=member.destination.name)
            done.add(member.destination)
        return done


def _why_not(
    sources: Sequence[CopySource],
    bad: Mapping[str, str],
    identities_of: Callable[[CopySource], list[Identity] | None],
) -> str:
    """Why no copy could fill a destination in, naming each source and what stood in the way."""
    if not sources:
        return "Cloud 66 no longer lists it and no other destination's copy could be read"
    reasons = []
    for source in sources:
        name = source.destination.name
        if name in bad:
            reasons.append(f"the copy in {name!r} could not be used ({bad[name]})")
        elif identities_of(source) is None:
            reasons.append(
                f"the copy in {name!r} is encrypted and there is no identity to decrypt it"
                " (set [encryption] identity_file)"
            )
        else:
            reasons.append(f"the copy in {name!r} could not be written here")
    return "Cloud 66 no longer lists it, and " + "; ".join(reasons)

"""The rows of the state, as the rest of the program sees them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PrunedBackup:
    """A backup removed by retention: never downloaded again. `complete` once its data is gone."""

    stack_uid: str
    backup_id: int
    db_type: str
    database_name: str
    backup_date: str | None
    tar_key: str
    manifest_key: str
    pruned_at: str
    complete: bool
    storage: str = "default"  # the destination it was pruned from


@dataclass(frozen=True)
class TransferPart:
    """A part of a transfer under way, as its first answer described it."""

    id: str
    size: int
    etag: str | None
    md5: str | None  # the MD5 its bytes must have, when the ETag proved one


@dataclass(frozen=True)
class Transfer:
    """A backup being transferred: its key and the parts known so far, in order."""

    stack_uid: str
    backup_id: int
    tar_key: str
    started_at: str
    parts: list[TransferPart]


@dataclass(frozen=True)
class PendingCommit:
    """A backup whose data is committed (or about to be) and whose manifest is not written yet.

    `manifest` is the manifest to write (JSON), so a later pass can finish the commit.
    """

    stack_uid: str
    backup_id: int
    tar_key: str
    manifest_key: str
    manifest: str
    storage: str = "default"  # the destination the commit is in


@dataclass(frozen=True)
class Verification:
    """The last check of one archived copy."""

    stack_uid: str
    backup_id: int
    verified_at: str
    ok: bool
    problem: str | None
    deep: bool
    storage: str = "default"  # the destination whose copy was checked


@dataclass(frozen=True)
class VerifyRun:
    """One `verify` run: when it finished, how many backups it checked, how many failed."""

    finished_at: str
    checked: int
    failed: int


@dataclass(frozen=True)
class RunRecord:
    """The outcome of one pass, as `status` shows it."""

    started_at: str
    finished_at: str
    ok: bool
    archived: int
    skipped: int
    failed: list[dict[str, object]]  # [{"stack_uid", "backup_id", "reason"}]
    bytes: int

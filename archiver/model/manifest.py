"""The manifest written beside each archived tar, and the record it yields.

A manifest is written last: its presence is what "archived" means, and the
state can be rebuilt from manifests alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from archiver.model.backup_identity import identity_from_json, identity_of

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class PartRecord:
    """One upstream file (piece) of a backup, as archived."""

    id: str
    name: str
    size: int
    sha256: str
    etag: str | None


@dataclass(frozen=True)
class ArchivedBackup:
    """What the state and `status` know about one archived copy of a backup.

    One per destination that holds the backup (`storage` names it). Keys are
    relative to that destination's root: where that is, and so the location users
    see, comes from the configuration when it is read, never from the state.
    """

    stack_uid: str
    backup_id: int
    db_type: str
    database_name: str
    size: int
    sha256: str
    archived_at: str
    tar_key: str
    manifest_key: str
    backup_date: str | None = None
    storage: str = "default"
    # Until when S3 Object Lock keeps this copy (ISO 8601), for destinations that lock.
    locked_until: str | None = None


@dataclass(frozen=True)
class Manifest:
    """The content of `manifest.json`."""

    stack_uid: str
    backup_id: int
    db_type: str
    database_name: str
    backup_date: str | None
    size: int
    sha256: str
    parts: list[PartRecord]
    archived_at: str
    file: str
    source: dict[str, Any] = field(default_factory=dict)
    version: int = MANIFEST_VERSION
    # Encrypted backups only: what is stored (the age file), and how it was encrypted.
    # `size` and `sha256` above are always the plaintext's: what a restore gives back.
    stored_size: int | None = None
    stored_sha256: str | None = None
    encryption: dict[str, Any] | None = None

    @property
    def encrypted(self) -> bool:
        """True when the stored file is an age file, not the tar itself."""
        return self.encryption is not None

    @property
    def expected_stored_size(self) -> int:
        """The size of the stored object."""
        return self.size if self.stored_size is None else self.stored_size

    @property
    def expected_stored_sha256(self) -> str:
        """The sha256 of the stored object."""
        return self.sha256 if self.stored_sha256 is None else self.stored_sha256

    def to_json(self) -> bytes:
        """Stable, readable JSON; the encryption fields only for encrypted backups."""
        document = asdict(self)
        for name in ("stored_size", "stored_sha256", "encryption"):
            if document[name] is None:
                del document[name]
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse a manifest; raises ValueError (or KeyError/TypeError) when it is not one."""
        document = json.loads(data)
        if not isinstance(document, dict):
            raise ValueError("a manifest is a JSON object")
        parts = [PartRecord(**part) for part in document.get("parts", [])]
        return cls(
            **identity_from_json(document),
            size=int(document["size"]),
            sha256=str(document["sha256"]),
            parts=parts,
            archived_at=str(document["archived_at"]),
            file=str(document.get("file", "")),
            source=dict(document.get("source") or {}),
            version=int(document.get("version", MANIFEST_VERSION)),
            stored_size=_optional_int(document.get("stored_size")),
            stored_sha256=_optional_str(document.get("stored_sha256")),
            encryption=dict(document["encryption"]) if document.get("encryption") else None,
        )

    def archived_record(
        self, *, tar_key: str, manifest_key: str, storage: str, locked_until: str | None = None
    ) -> ArchivedBackup:
        """The state's view of this manifest, as the copy in destination `storage`."""
        return ArchivedBackup(
            **identity_of(self),
            size=self.size,
            sha256=self.sha256,
            archived_at=self.archived_at,
            tar_key=tar_key,
            manifest_key=manifest_key,
            storage=storage,
            locked_until=locked_until,
        )


def _optional_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class Tombstone:
    """The content of `pruned.json`: a backup retention removed, remembered in storage.

    Written before the backup's manifest and data are removed, and read when the
    state is rebuilt, so a pruned backup is never downloaded again even though
    Cloud 66 may still list it.
    """

    stack_uid: str
    backup_id: int
    db_type: str
    database_name: str
    backup_date: str | None
    pruned_at: str
    policy: str
    file: str  # the data file's name beside it, so a rebuild can finish an interrupted prune
    version: int = MANIFEST_VERSION

    def to_json(self) -> bytes:
        """Stable, readable JSON."""
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Tombstone:
        """Parse a tombstone; raises ValueError (or KeyError/TypeError) when it is not one."""
        document = json.loads(data)
        if not isinstance(document, dict):
            raise ValueError("a tombstone is a JSON object")
        return cls(
            **identity_from_json(document, names_required=False),
            pruned_at=str(document["pruned_at"]),
            policy=str(document.get("policy", "")),
            file=str(document.get("file", "")),
            version=int(document.get("version", MANIFEST_VERSION)),
        )


def utc_now_iso() -> str:
    """Now, as ISO 8601 UTC with a Z."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

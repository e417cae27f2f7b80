"""Where a backup lives in the archive, built only from sanitised components.

`<stack_uid>/<db_type>/<database_name>/<YYYY-MM-DDTHHMMSSZ>_<backup_id>/`
holds `<database_name>.tar` and `manifest.json`. Upstream strings never
become path components unchecked: see `safe_component`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime

MANIFEST_NAME = "manifest.json"
# An encrypted backup is stored as `<database_name>.tar.age` (the age v1 format).
ENCRYPTED_SUFFIX = ".age"
# Beside where a pruned backup's manifest was: what remembers it (see manifest.Tombstone).
TOMBSTONE_NAME = "pruned.json"
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")
_MAX_COMPONENT_BYTES = 120


def safe_component(value: object, *, fallback: str = "unnamed") -> str:
    """Turn upstream data into one harmless path component.

    No separators, NUL or control characters, no leading dots (so no `.`, `..`
    or hidden names), bounded length; empty results become `fallback`.
    """
    text = unicodedata.normalize("NFC", str(value if value is not None else ""))
    text = _UNSAFE.sub("_", text).strip().lstrip(".")
    encoded = text.encode("utf-8")[:_MAX_COMPONENT_BYTES]
    text = encoded.decode("utf-8", errors="ignore").strip()
    return text or fallback


def backup_folder_name(backup_date: datetime | None, backup_id: int) -> str:
    """`2024-05-01T031500Z_123`: sorts by date, unique by id."""
    if backup_date is None:
        stamp = "undated"
    else:
        if backup_date.tzinfo is None:
            backup_date = backup_date.replace(tzinfo=UTC)
        stamp = backup_date.astimezone(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    return f"{stamp}_{int(backup_id)}"


def sibling_key(key: str, name: str) -> str:
    """The key of `name` in the same folder as `key` (e.g. a manifest's tombstone)."""
    folder = key.rpartition("/")[0]
    return f"{folder}/{name}" if folder else name


@dataclass(frozen=True)
class BackupKeys:
    """The storage keys of one archived backup."""

    tar: str
    manifest: str


def backup_keys(
    *,
    stack_uid: str,
    db_type: str | None,
    database_name: str | None,
    backup_date: datetime | None,
    backup_id: int,
    encrypted: bool = False,
) -> BackupKeys:
    """Keys for a backup's joined tar (`.tar.age` when encrypted) and its manifest."""
    database = safe_component(database_name, fallback="database")
    folder = "/".join(
        (
            safe_component(stack_uid, fallback="stack"),
            safe_component(db_type, fallback="unknown"),
            database,
            backup_folder_name(backup_date, backup_id),
        )
    )
    return BackupKeys(
        tar=f"{folder}/{database}.tar{ENCRYPTED_SUFFIX if encrypted else ''}",
        manifest=f"{folder}/{MANIFEST_NAME}",
    )
